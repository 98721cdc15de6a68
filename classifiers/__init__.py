"""Learning from the feature store, in three floors that import downward only:

- :mod:`classifiers.learners`: probes, heads, CNN-LSTM, LoRA, training, normalisation, alignment,
  metrics, statistics and splits. Arrays in, arrays out; never the store.
- :mod:`classifiers.studies`: run configurations, protocols, runners, results, the ledger, study
  files and sweeps. Reads the store through :mod:`featurestore.view`.
- :mod:`classifiers.reports`: rows of results → tables, plots and the text printed about a result.
"""
