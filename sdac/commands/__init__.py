"""sdac.commands"""
