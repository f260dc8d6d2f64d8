"""Bridge to streaming/: simulated traffic published as ExposureV1/OutcomeV1 and read back into the analysis tables."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

pytest.importorskip("streaming.events")

from abtest.config import ExperimentsConfig  # noqa: E402
from abtest.driver import InProcessDriver, OracleRanker  # noqa: E402
from abtest.events import FanoutSink, MemorySink  # noqa: E402
from abtest.routing import Router  # noqa: E402
from abtest.simulator import Effect, MarketplaceSimulator, SimulationConfig  # noqa: E402
from abtest.stream import KafkaEventSink, frames_from_events  # noqa: E402
from recast.settings import Settings  # noqa: E402

CONFIG = ExperimentsConfig.model_validate({
    "default_model": "dlf",
    "layers": [{"name": "ranking", "experiments": [{
        "name": "exp", "variants": [{"name": "control", "weight": 1, "model": "dlf"}, {"name": "treatment", "weight": 1, "model": "dmoe"}]}]}],
})


class FakeProducer:
    def __init__(self):
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.flushed = False

    def send(self, topic, key=None, value=None):
        self.sent.append((topic, key, value))

    def flush(self):
        self.flushed = True


def test_published_events_decode_and_round_trip_into_the_same_tables():
    from streaming.events import decode

    settings = Settings()
    sim = MarketplaceSimulator(SimulationConfig(experiment="exp", n_units=80, days=2, pre_days=1, sessions_per_day=1.0,
                                                effects={"treatment": Effect(ctr=0.5)}, seed=1), CONFIG)
    driver = InProcessDriver(Router(CONFIG), {"dlf": OracleRanker(sim, 1.0), "dmoe": OracleRanker(sim, 1.0)})
    producer = FakeProducer()
    mem = MemorySink()
    kafka = KafkaEventSink(settings, producer=producer)
    sim.simulate_driven(driver, FanoutSink(mem, kafka), candidates=30)
    assert producer.flushed and kafka.sent["exposures"] == mem.exposures().height
    topics = {t for t, _, _ in producer.sent}
    assert topics == {settings.kafka.exposures_topic, settings.kafka.outcomes_topic}
    exposures = [decode(v, "exposure") for t, _, v in producer.sent if t == settings.kafka.exposures_topic]
    outcomes = [decode(v, "outcome") for t, _, v in producer.sent if t == settings.kafka.outcomes_topic]
    assert all(k == e.user.encode() for (t, k, _), e in zip([x for x in producer.sent if x[0] == settings.kafka.exposures_topic], exposures))
    exp, out = frames_from_events(exposures, outcomes, CONFIG)
    ref_e = mem.exposures().sort("request_id", "experiment", nulls_last=True)
    got_e = exp.sort("request_id", "experiment", nulls_last=True)
    assert got_e.select("request_id", "unit_id", "experiment", "variant", "model", "n_items").equals(
        ref_e.select("request_id", "unit_id", "experiment", "variant", "model", "n_items"))
    # millisecond event times on the stream
    np.testing.assert_allclose(got_e["ts"].dt.epoch("ms").to_numpy(), ref_e["ts"].dt.epoch("ms").to_numpy(), atol=1)
    assert got_e.filter(pl.col("experiment") == "exp")["layer"].unique().to_list() == ["ranking"]
    ref_o = mem.outcomes()
    assert out.height == ref_o.height and out["value"].sum() == pytest.approx(ref_o["value"].sum())


def test_direct_mode_frames_are_rejected_by_the_kafka_sink():
    from abtest.events import empty_exposures

    with pytest.raises(ValueError, match="items"):
        KafkaEventSink(Settings(), producer=FakeProducer()).write_exposures(empty_exposures())
