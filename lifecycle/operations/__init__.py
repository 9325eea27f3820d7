"""Lead operations as pure decisions (docs/contract.md): the policy, calendars, the router and SLA clocks — no IO."""
