"""A/B experiments measuring CTR and GMV.

=================  ====================================================================
``config``         experiments YAML (layers, holdout, variants, metrics, analysis) -> pydantic
``assignment``     deterministic SHA-256 bucketing: holdout, layers, ramp-safe traffic, variants
``routing``        ``Router.route(user_id, requested_model, now)`` for the gateway: model + exposure rows
``events``         exposure / outcome table schemas and sinks (memory, parquet, fan-out)
``aggregate``      per-unit tables from the event logs (polars, lazy) and per-variant moments
``stats``          pure functions over summary statistics (delta method, Welch, CUPED, SRM,
                   mSPRT, Holm/BH, Bayes, winsorization)
``analysis``       ``analyze(config, experiment, exposures, outcomes)`` -> ``Readout``
``report``         HTML (+ JSON) with SRM banner, forest plot and cumulative lift (inline SVG)
``interleaving``   team-draft interleaving, credit, sign test, bootstrap
``simulator``      SIMULATED marketplace (MovieLens users/items) with known injected effects
``driver``         how the simulator reaches a recommender: in-process or the HTTP gateway
``stream``         bridge to streaming/ (ExposureV1 / OutcomeV1 on Kafka)
=================  ====================================================================

Nothing here imports torch or training/.
"""
