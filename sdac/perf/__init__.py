"""sdac.perf"""
