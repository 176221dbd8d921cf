"""sdac.compiler"""
