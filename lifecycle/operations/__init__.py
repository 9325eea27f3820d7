"""Lead operations as pure decisions (docs/operations.md): the policy, calendars, the router and SLA clocks — no IO."""
