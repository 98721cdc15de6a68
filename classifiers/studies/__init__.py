"""Studies: configurations, protocols, results and the ledger, over views of the store.

The YAML files beside these modules are the shipped study files (``fs sweep paper``).
"""
