"""Planning: the plan model, the pure planner, and the plan's JSON codec.

``plan_pipeline(pipeline, topology, start)`` is a pure function; ``fleetwave plan``
prints its result and ``fleetwave deploy`` executes that same object.
"""

from fleetwave.planning.model import Batching, Plan, RegionPlan, Stage, StageKind, Wave
from fleetwave.planning.planner import plan_pipeline

__all__ = ["Batching", "Plan", "RegionPlan", "Stage", "StageKind", "Wave", "plan_pipeline"]
