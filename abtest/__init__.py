"""A/B experiments measuring CTR and GMV.

=================  ====================================================================
``config``         experiments YAML (layers, holdout, variants, metrics, analysis) -> pydantic
``assignment``     deterministic SHA-256 bucketing: holdout, layers, ramp-safe traffic, variants
``routing``        ``Router.route(user_id, requested_model, now)`` for the gateway: model + exposure rows
``events``         exposure / outcome table schemas and sinks (memory, parquet, fan-out)
``aggregate``      per-unit tables from the event logs (polars, lazy) and per-variant moments
``stats``          pure functions over summary statistics (delta method, Welch, Fieller, CUPED,
                   SRM, mSPRT, Holm/BH, Bayes, winsorization)
``comparison``     one metric x variant: decision on the absolute scale, Fieller intervals,
                   CUPED fallback, minimum-sample rule, statuses instead of errors
``power``          sample size, minimum detectable effect, power (``recast abtest power``)
``verdict``        ship / don't ship / keep running / invalid, one line per primary metric
``timeline``       cumulative and daily lift, novelty check
``segments``       breakdowns by dimension (BH over cells, Cochran's Q per dimension)
``quantiles``      order-value quantiles with user-clustered intervals
``holdout``        everything launched vs the global holdout
``analysis``       ``analyze(config, experiment, exposures, outcomes)`` -> ``Readout``
``report``         HTML (+ JSON): verdicts first, tables with hover help, forest plot, lift over time
``montecarlo``     simulated experiments through the production path (validation, benchmark)
``interleaving``   team-draft interleaving, credit, sign test, bootstrap
``simulator``      SIMULATED marketplace (MovieLens users/items) with known injected effects
``driver``         how the simulator reaches a recommender: in-process or the HTTP gateway
``stream``         bridge to streaming/ (ExposureV1 / OutcomeV1 on Kafka)
=================  ====================================================================

Nothing here imports torch or training/.
"""
