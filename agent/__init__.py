"""Stage 4, the agent: incident context, read-only investigation tools, and reasoners (graph by default, an LLM
ReAct loop when configured) that rank root-cause hypotheses. (Issue 7; not built yet.)"""
