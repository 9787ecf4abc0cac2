"""The actor runtime: pooled pykka actors, plan supervisors, step actors, persistence."""
