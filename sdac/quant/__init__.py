"""sdac.quant"""
