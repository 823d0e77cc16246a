"""The namespace lab: network namespaces, a measuring client, scenarios and the demo."""
