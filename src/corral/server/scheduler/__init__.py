"""The placement scheduler: pure functions choosing a host for a VM (no database, no I/O)."""

from corral.server.scheduler.filters import DEFAULT_FILTERS, Filter
from corral.server.scheduler.model import HostRefusal, HostView, PlacementRequest
from corral.server.scheduler.placement import no_host_available, place, rank, refusals
from corral.server.scheduler.weighers import DEFAULT_WEIGHERS, Weigher, WeightedWeigher

__all__ = [
    "DEFAULT_FILTERS",
    "DEFAULT_WEIGHERS",
    "Filter",
    "HostRefusal",
    "HostView",
    "PlacementRequest",
    "Weigher",
    "WeightedWeigher",
    "no_host_available",
    "place",
    "rank",
    "refusals",
]
