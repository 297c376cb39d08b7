"""Identity and access: who calls (``Caller``), what they may do (permissions, roles), what they see."""
