"""Read models: funnel, velocity, attribution, speed to lead and the lead list.

Each module is a deterministic fold over lead events into tables; `runner` feeds
them in batches from a `sources.Source` and commits each batch's rows with its
checkpoint in one transaction; `service.Analytics` answers the analyst's queries (docs/contract.md).
"""
