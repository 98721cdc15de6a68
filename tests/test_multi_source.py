"""Multi-source probes (``--source a,b``: trained on the union) and ``loco:`` in study files."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from classifiers.studies.protocols import ProbeConfig, ProtocolError, _load_side, run_probe
from classifiers.studies.sweep import expand_study, parse_study
from tests.test_select import MODEL, build_four


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory):
    return build_four(tmp_path_factory.mktemp("multi"))


def test_one_source_keeps_its_config_key() -> None:
    single = ProbeConfig(source="emodb", target="urdu", model=MODEL)
    assert single.to_dict()["source"] == "emodb"
    text = json.dumps(single.to_dict(), sort_keys=True, separators=(",", ":"))
    assert single.key() == hashlib.sha256(text.encode()).hexdigest()
    assert ProbeConfig(source=["emodb"], target="urdu", model=MODEL).key() == single.key()


def test_several_sources_are_one_sorted_tuple() -> None:
    a = ProbeConfig(source="emovo,emodb", target="urdu", model=MODEL)
    b = ProbeConfig(source=["emodb", "emovo"], target="urdu", model=MODEL)
    assert a.source == ("emodb", "emovo") and a.key() == b.key()
    assert ProbeConfig.from_dict(json.loads(json.dumps(a.to_dict()))).key() == a.key()  # ledger round trip
    with pytest.raises(ProtocolError, match="target 'urdu' is among the sources"):
        ProbeConfig(source="emodb,urdu", target="urdu", model=MODEL)


def test_union_trains_on_all_sources_normalised_per_corpus(four) -> None:
    ws, store = four
    config = ProbeConfig(source="emodb,berlin", target="urdu", model=MODEL, seeds=1, norm="corpus", layer=1)
    side = _load_side(config, "source", store, ws, {})
    sizes = [len(ws.load_manifest(c).rows) for c in ("berlin", "emodb")]
    assert len(side.labels) == sum(sizes)
    assert all(g.split(":")[0] in ("berlin", "emodb") for g in side.groups)  # speaker ids prefixed by corpus
    X = side.matrix(1)
    for part in (0, 1):  # each corpus standardised with its own statistics
        np.testing.assert_allclose(X[side.parts == part].mean(axis=0), 0, atol=1e-4)
    result = run_probe(config, store, ws)
    assert result.n_train == [sum(sizes)]
    assert len(result.identity["data_digests"]["source"]) == 2


def test_loco_expands_each_corpus_as_target_from_the_others() -> None:
    study = parse_study({"name": "loco", "experiments": [{"models": MODEL, "loco": ["emodb", "urdu", "emovo"]}]})
    pairs = [(c.config.source, c.config.target) for c in expand_study(study)]
    assert pairs == [(("emovo", "urdu"), "emodb"), (("emodb", "emovo"), "urdu"), (("emodb", "urdu"), "emovo")]
    with pytest.raises(Exception, match="loco needs a list of at least three"):
        parse_study({"name": "x", "experiments": [{"models": MODEL, "loco": ["emodb", "urdu"]}]})
