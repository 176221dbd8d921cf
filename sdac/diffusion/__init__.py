"""sdac.diffusion"""
