"""The edge fleet: heartbeats from township edges and their health as the county sees it."""
