"""From a flat graph to an executable plan: lowering through PlanBuilder, arena planning
(arena.py), the op table the Cython runner executes (planner.py) and the memory report."""
