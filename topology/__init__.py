"""Stage 2, topology: entity resolution from resource attributes, call edges from spans, the live dependency
graph and its queries. (Issue 4; not built yet.)"""
