import json
import statistics
import weakref

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig, LlamaForCausalLM

from pruned_perf.bench import calls as calls_module
from pruned_perf.bench import rounds as rounds_module
from pruned_perf.bench.bandwidth import decode_step_bytes, device_copy_bytes_per_s
from pruned_perf.bench.calls import GenerationLengthError, make_inputs
from pruned_perf.bench.measure import OomGuard, measure
from pruned_perf.core.errors import UserError
from pruned_perf.core.schema import Measurement, Point, timing_fields

try:
    from tests.synthetic_results import SCHEMA_FIELDS
except ImportError:
    from synthetic_results import SCHEMA_FIELDS

VOCAB = 320


def tiny_llama(layers=2, kv_heads=4, seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=256)
    return LlamaForCausalLM(config).eval()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


def point(batch=2, inp=8, out=8, backend="eager", model="tiny", method="dense"):
    return Point(model, method, inp, out, batch, backend)


# --- Point ----------------------------------------------------------------------------------------

def test_point_id_and_series():
    p = Point("llama-7b", "flap", 12, 128, 64)
    assert p.id == "llama-7b-flap-in12-out128-M64-eager"
    assert p.series == ("llama-7b", "flap", 12, 128, "eager")
    assert Point("llama-7b", "flap", 12, 128, 8).series == p.series
    assert Point("llama-7b", "flap", 12, 128, 8, "static").series != p.series


def test_point_rejects_unknown_backend_naming_it_and_the_choices():
    with pytest.raises(UserError, match=r"'compiled'.*eager.*static"):
        Point("m", "dense", 12, 128, 1, "compiled")


@pytest.mark.parametrize("field,value", [("input_tokens", 0), ("output_tokens", -3), ("batch_size", 2.5),
                                         ("batch_size", True), ("input_tokens", "12")])
def test_point_rejects_non_positive_ints_naming_field_and_value(field, value):
    kwargs = dict(model="m", method="dense", input_tokens=12, output_tokens=128, batch_size=1)
    kwargs[field] = value
    with pytest.raises(UserError, match=rf"{field}.*{value!r}".replace("(", r"\(").replace(")", r"\)")):
        Point(**kwargs)


def test_point_rejects_empty_model_name():
    with pytest.raises(UserError, match="model"):
        Point("", "dense", 12, 128, 1)


# --- inputs ---------------------------------------------------------------------------------------

def test_make_inputs_shape_deterministic_no_reserved_ids():
    p = point(batch=16, inp=82)
    a = make_inputs(p, VOCAB, "cpu")
    b = make_inputs(p, VOCAB, "cpu")
    assert a["input_ids"].shape == (16, 82)
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(a["attention_mask"], torch.ones(16, 82, dtype=a["input_ids"].dtype))
    assert int(a["input_ids"].min()) >= 3 and int(a["input_ids"].max()) < VOCAB
    assert len({tuple(row.tolist()) for row in a["input_ids"]}) == 16  # distinct prompts
    assert not torch.equal(make_inputs(p, VOCAB, "cpu", seed=1)["input_ids"], a["input_ids"])


def test_make_inputs_does_not_depend_on_global_rng():
    p = point()
    torch.manual_seed(1)
    a = make_inputs(p, VOCAB, "cpu")
    torch.manual_seed(2)
    assert torch.equal(a["input_ids"], make_inputs(p, VOCAB, "cpu")["input_ids"])


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 32), inp=st.integers(1, 128), vocab=st.integers(4, 40000))
def test_make_inputs_any_shape(batch, inp, vocab):
    ids = make_inputs(point(batch=batch, inp=inp), vocab, "cpu")["input_ids"]
    assert ids.shape == (batch, inp)
    assert int(ids.min()) >= 3 and int(ids.max()) < vocab


def test_make_inputs_rejects_tiny_vocab():
    with pytest.raises(UserError, match="vocab_size"):
        make_inputs(point(), 3, "cpu")


# --- timing fields --------------------------------------------------------------------------------

@st.composite
def _calls(draw):
    """Timed calls as the token clock sees them: each call's token times grow, and end before it does."""
    out = draw(st.integers(1, 64))
    n = draw(st.integers(1, 9))
    rounds, traces = [], []
    for _ in range(n):
        gaps = draw(st.lists(st.floats(0.0, 0.5), min_size=out, max_size=out))
        trace = [sum(gaps[:i + 1]) for i in range(out)]
        traces.append(trace)
        rounds.append(trace[-1] + draw(st.floats(1e-6, 0.1)))
    return out, rounds, traces


@settings(max_examples=80, deadline=None)
@given(calls=_calls(), batch=st.integers(1, 384))
def test_timing_fields_come_from_the_same_calls_and_keep_their_order(calls, batch):
    out, rounds, traces = calls
    t = timing_fields(point(batch=batch, out=out), rounds, traces)
    assert t["latency_s"] == statistics.median(rounds)
    assert t["latency_min_s"] == min(rounds) <= t["latency_s"]
    assert t["latency_iqr_s"] >= 0
    assert t["tokens_per_s"] == pytest.approx(batch * out / t["latency_s"])
    assert t["ttft_rounds_s"] == [trace[0] for trace in traces]
    # by construction, whatever the machine did: no inverted or negative timing
    assert 0 <= t["ttft_s"] <= t["latency_s"]
    if out == 1:
        assert t["tpot_s"] is None and t["tpot_rounds_s"] == [] and t["itl_max_s"] is None
    else:
        assert t["tpot_rounds_s"] == pytest.approx([(tr[-1] - tr[0]) / (out - 1) for tr in traces])
        assert 0 <= t["tpot_s"] and 0 <= t["itl_p50_s"] <= t["itl_p90_s"] <= t["itl_max_s"]


def test_inter_token_quantiles_pool_every_round():
    traces = [[0.1, 0.2, 0.3, 0.7], [0.1, 0.2, 0.3, 0.4]]  # gaps 0.1 0.1 0.4 | 0.1 0.1 0.1
    t = timing_fields(point(out=4), [1.0, 1.0], traces)
    assert t["itl_p50_s"] == pytest.approx(0.1) and t["itl_max_s"] == pytest.approx(0.4)
    assert t["itl_p90_s"] == pytest.approx(0.25)  # between the 5th and 6th of six gaps
    assert t["tpot_rounds_s"] == pytest.approx([0.2, 0.1])


def test_a_round_of_several_calls_gets_the_mean_of_its_calls_tpot():
    # two rounds of two calls each, in order; rounds_s is already per call (the round's mean)
    traces = [[0.1, 0.3], [0.3, 0.4], [0.2, 0.6], [0.2, 0.4]]
    t = timing_fields(point(out=2), [0.5, 0.7], traces, calls=2)
    assert t["ttft_rounds_s"] == pytest.approx([0.2, 0.2])
    assert t["tpot_rounds_s"] == pytest.approx([0.15, 0.3])
    assert t["itl_max_s"] == pytest.approx(0.4)  # the gaps of every call
    assert t["latency_s"] == pytest.approx(0.6)


def test_a_rounds_ttft_is_its_median_calls_at_most_its_time_per_call():
    # round 1: a slow first prefill among three (the mean would be 0.2); round 2: calls of unequal
    # length, whose median TTFT (0.3) would exceed the round's time per call (0.27)
    traces = [[0.4, 0.5], [0.1, 0.3], [0.1, 0.2], [0.05, 0.1], [0.3, 0.35], [0.3, 0.35]]
    t = timing_fields(point(out=2), [0.4, 0.27], traces, calls=3)
    assert t["ttft_rounds_s"] == pytest.approx([0.1, 0.27])
    assert t["ttft_s"] == pytest.approx(0.185) and t["ttft_s"] <= t["latency_s"]


def test_iqr_of_known_rounds():
    t = timing_fields(point(out=1), [1.0, 2.0, 3.0, 4.0, 5.0], [[0.1]] * 5)
    assert t["latency_iqr_s"] == pytest.approx(2.0)
    assert t["latency_min_s"] == 1.0


# --- measure --------------------------------------------------------------------------------------

def test_measurement_fields_consistent(model):
    p = point(batch=2, inp=8, out=8)
    m = measure(model, p, rounds=5, warmup=2)
    assert not m.oom and not m.oom_skipped
    assert len(m.rounds_s) == 5 and len(m.ttft_rounds_s) == 5 and len(m.tpot_rounds_s) == 5
    assert len(m.warmup_s) == 2
    assert m.latency_s == statistics.median(m.rounds_s)
    assert m.latency_min_s == min(m.rounds_s)
    assert m.tokens_per_s == pytest.approx(2 * 8 / m.latency_s)
    assert m.ttft_s == statistics.median(m.ttft_rounds_s)
    assert all(0 < t <= r for t, r in zip(m.ttft_rounds_s, m.rounds_s))  # the same calls
    assert m.tpot_s == statistics.median(m.tpot_rounds_s) > 0
    assert m.itl_p50_s <= m.itl_p90_s <= m.itl_max_s
    # the steadiness probe ran before each round and after the last
    assert len(m.probe_rounds_s) == 6 and m.probe_s == statistics.median(m.probe_rounds_s) > 0
    assert m.peak_mem_bytes is None  # CPU cannot say
    assert (m.dtype, m.device, m.backend) == ("float32", "cpu", "eager")
    assert m.params == sum(p.numel() for p in model.parameters())
    assert m.weight_bytes == 4 * m.params
    assert m.layers == [{"heads": 4, "kv_heads": 4, "mlp": 128}] * 2
    assert m.id == p.id


@pytest.mark.parametrize("reader, field", [("run_queue_wait_s", "runqueue_wait"), ("others_cpu_s", "others_cpu")])
def test_machine_counters_are_read_between_rounds_and_taken_per_second_of_round(model, monkeypatch, reader, field):
    """Read in the untimed hooks right before and after each round; off Linux there is nothing to read."""
    readings = iter([0.0, 0.0, 0.1, 0.3, 0.5, 0.6])  # start 1, end 1, start 2, end 2, ...
    monkeypatch.setattr(rounds_module.steadiness, reader, lambda *peers: next(readings))
    m = measure(model, point(batch=1, inp=4, out=2), rounds=3, warmup=1)
    per_round = getattr(m, f"{field}_rounds_s")
    assert per_round == pytest.approx([0.0, 0.2, 0.1])
    assert getattr(m, f"{field}_frac") == pytest.approx(statistics.median(c / r for c, r in zip(per_round, m.rounds_s)))
    monkeypatch.setattr(rounds_module.steadiness, reader, lambda *peers: None)
    off_linux = measure(model, point(batch=1, inp=4, out=2), rounds=3, warmup=1)
    assert getattr(off_linux, f"{field}_rounds_s") == [] and getattr(off_linux, f"{field}_frac") is None


def test_decode_bandwidth_fraction_uses_the_documented_formula(model):
    p = point(batch=2, inp=8, out=8)
    m = measure(model, p, rounds=5)
    step_bytes = m.weight_bytes + 2 * (2 * 4 * 16 * (8 + 8 / 2) * 2 * 4)  # 2 layers, K+V, 4 heads of 16
    assert decode_step_bytes(p, m.weight_bytes, m.layers, 16, 4) == pytest.approx(step_bytes)
    assert m.device_copy_bytes_per_s == device_copy_bytes_per_s("cpu") > 0
    assert m.decode_bw_frac == pytest.approx(step_bytes / m.tpot_s / m.device_copy_bytes_per_s)


def test_kv_bytes_follow_the_kept_kv_heads():
    p = point(batch=4, inp=10, out=20)
    pruned = [{"heads": 4, "kv_heads": 2, "mlp": 64}, {"heads": 0, "kv_heads": 0, "mlp": 64}]
    assert decode_step_bytes(p, 1000, pruned, 16, 2) == 1000 + 2 * 2 * 16 * 20 * 4 * 2


def test_layers_are_passed_through(model):
    given_layers = [{"heads": 3, "kv_heads": 1, "mlp": 100}]
    m = measure(model, point(batch=1, out=2), rounds=1, layers=given_layers)
    assert m.layers == given_layers


def test_exactly_out_tokens_even_when_the_model_always_emits_eos():
    rigged = tiny_llama(seed=1)
    with torch.no_grad():
        rigged.model.norm.weight.zero_()  # every logit is 0, so argmax is token 0 ...
    rigged.generation_config.eos_token_id = 0  # ... which is EOS
    rigged.generation_config.pad_token_id = 0
    p = point(batch=2, inp=8, out=16)
    inputs = make_inputs(p, VOCAB, "cpu")
    plain = rigged.generate(**inputs, max_new_tokens=16, do_sample=False)
    assert plain.shape[1] < 8 + 16  # the rig works: a plain generate stops early
    m = measure(rigged, p, rounds=1)  # measure asserts the length on every call
    assert not m.oom and len(m.rounds_s) == 1


def test_a_short_generation_is_an_error(model, monkeypatch):
    p = point(batch=2, inp=8, out=8)

    def short_generate(input_ids, **kwargs):
        return torch.cat([input_ids, input_ids[:, :3]], dim=1)

    monkeypatch.setattr(model, "generate", short_generate)
    with pytest.raises(GenerationLengthError, match=r"\(2, 11\).*expected \(2, 16\)"):
        measure(model, p, rounds=1)


def spy_generate(model, monkeypatch) -> list[dict]:
    """The keyword arguments of every generate call on `model` from here on, in order."""
    seen = []
    real = model.generate

    def spy(**kwargs):
        seen.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    return seen


def test_generate_arguments_pin_the_length_and_greedy(model, monkeypatch):
    seen = spy_generate(model, monkeypatch)
    measure(model, point(batch=1, out=5), rounds=1)
    # warm-up + 1 round, and no separate one-token calls: the first token is timed within these
    assert [kw["max_new_tokens"] for kw in seen] == [5, 5]
    for kw in seen:
        assert kw["min_new_tokens"] == kw["max_new_tokens"]
        assert kw["do_sample"] is False and kw["pad_token_id"] is not None
        assert kw["cache_implementation"] == "dynamic"


def test_each_round_starts_with_one_untimed_forward_of_the_prompt(model, monkeypatch):
    calls = []  # in order: "generate", or the shape of a forward outside generate
    real = model.generate

    def logged(**kwargs):
        calls.append("generate")
        return real(**kwargs)

    monkeypatch.setattr(model, "generate", logged)

    def warm(module, args, kwargs):
        if kwargs.get("use_cache") is False:  # generate's own forwards keep a KV cache
            calls.append((tuple(kwargs["input_ids"].shape), kwargs.get("logits_to_keep")))

    handle = model.register_forward_pre_hook(warm, with_kwargs=True)
    try:
        m = measure(model, point(batch=3, inp=5, out=4), rounds=2)
    finally:
        handle.remove()
    # the warm-up call, then each round: the prompt's forward (last position's logits only), its call
    assert calls == ["generate", ((3, 5), 1), "generate", ((3, 5), 1), "generate"]
    assert len(m.rounds_s) == len(m.ttft_rounds_s) == 2


def test_timed_rounds_hook_times_the_full_calls(model, monkeypatch):
    asked = []

    def hook(fn, rounds, warmup=0, setup=None, calls=1):
        assert warmup == 0 and setup is not None  # the steadiness probe runs before each round
        assert calls == 1  # measure's default: one call per round
        asked.append(rounds)
        lengths = []
        real = model.generate

        def spy(**kwargs):
            lengths.append(kwargs["max_new_tokens"])
            return real(**kwargs)

        monkeypatch.setattr(model, "generate", spy)
        for _ in range(rounds):
            setup()
            fn()
        monkeypatch.setattr(model, "generate", real)
        assert lengths == [6] * rounds  # full calls, not one-token ones
        return [0.5 + i for i in range(rounds)]

    m = measure(model, point(batch=1, out=6), rounds=3, timed_rounds=hook)
    assert asked == [3]
    assert m.rounds_s == [0.5, 1.5, 2.5] and m.latency_s == 1.5


def test_calls_per_round_makes_a_round_last_at_least_the_minimum(monkeypatch):
    called = []
    assert rounds_module.calls_per_round(lambda: called.append(1), 0.5, 0.0) == 1
    assert rounds_module.calls_per_round(lambda: called.append(1), 1.2, 1.0) == 1
    assert called == []  # a warm-up call that long is a round of its own: no sizing call
    monkeypatch.setattr(rounds_module, "time_once", lambda fn: 0.3)
    assert rounds_module.calls_per_round(lambda: None, 0.9, 1.0) == 4  # sized by a steady call: ceil(1.0 / 0.3)
    assert rounds_module.calls_per_round(lambda: None, 0.25, 0.2) == 1  # ... which may be long enough alone


def test_short_calls_are_timed_in_rounds_of_several(model, monkeypatch):
    calls = spy_generate(model, monkeypatch)
    m = measure(model, point(batch=1, inp=4, out=3), rounds=2, warmup=1, min_round_s=0.2)
    k = m.calls_per_round
    assert k > 1  # a call of 3 tokens of this model takes milliseconds
    assert len(calls) == 1 + 1 + 2 * k  # warm-up, the sizing call, two rounds of k
    assert len(m.rounds_s) == len(m.ttft_rounds_s) == len(m.tpot_rounds_s) == 2
    assert len(m.probe_rounds_s) == 3  # before each round and after the last, not per call
    assert all(0 < t <= r for t, r in zip(m.ttft_rounds_s, m.rounds_s))  # per call, both


def test_min_round_s_must_be_seconds(model):
    for bad in (-1.0, float("nan"), "1"):
        with pytest.raises(UserError, match=r"min_round_s must be a finite number of seconds >= 0, got"):
            measure(model, point(), rounds=1, min_round_s=bad)


def test_timed_rounds_hook_must_return_every_round(model):
    with pytest.raises(RuntimeError, match="1 rounds.*expected 3"):
        measure(model, point(batch=1, out=2), rounds=3, timed_rounds=lambda fn, rounds, warmup=0, setup=None, calls=1: [1.0])


@pytest.mark.parametrize("rounds,warmup", [(0, 1), (5, 0)])
def test_rounds_and_warmup_must_be_positive(model, rounds, warmup):
    with pytest.raises(UserError, match="rounds|warmup"):
        measure(model, point(), rounds=rounds, warmup=warmup)


def test_static_backend_on_cpu():
    static_model = tiny_llama(seed=2)
    long = point(batch=2, inp=8, out=24, backend="static")
    short = point(batch=2, inp=8, out=6, backend="static")
    m = measure(static_model, long, rounds=2)
    assert not m.oom and m.backend == "static" and m.tokens_per_s > 0
    long_cache = getattr(static_model, "_previous_max_cache_length", None)
    measure(static_model, short, rounds=2)
    # transformers would otherwise keep the long point's cache for the short point
    short_cache = getattr(static_model, "_previous_max_cache_length", None)
    if long_cache is not None:  # a transformers without the attribute has nothing to forget
        assert short_cache < long_cache and short_cache <= 8 + 6


def test_static_and_eager_generate_the_same_tokens():
    static_model = tiny_llama(seed=3)
    p_eager, p_static = point(batch=2, out=6), point(batch=2, out=6, backend="static")
    inputs = make_inputs(p_eager, VOCAB, "cpu")
    eager = static_model.generate(**inputs, **calls_module.generate_kwargs(static_model, p_eager, 6))
    static = static_model.generate(**inputs, **calls_module.generate_kwargs(static_model, p_static, 6))
    assert torch.equal(eager, static)


# --- OOM ------------------------------------------------------------------------------------------

def oom_for_large_batches(model, monkeypatch, threshold=8):
    real = model.generate

    def generate(**kwargs):
        if kwargs["input_ids"].shape[0] >= threshold:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(**kwargs)

    monkeypatch.setattr(model, "generate", generate)


def test_oom_is_a_result_and_guard_skips_larger_batches_of_that_series_only(model, monkeypatch):
    oom_for_large_batches(model, monkeypatch)
    guard = OomGuard()
    results = {}
    for batch in (1, 8, 16, 4):
        p = point(batch=batch, out=4)
        m = guard.skip(p) or measure(model, p, rounds=1)
        guard.record(p, m)
        results[batch] = m
    assert not results[1].oom and not results[4].oom
    assert results[8].oom and not results[8].oom_skipped
    assert results[8].latency_s is None and results[8].tokens_per_s is None and results[8].rounds_s == []
    assert results[16].oom and results[16].oom_skipped and results[16].batch_size == 16
    assert results[16].id == point(batch=16, out=4).id and results[16].params == results[1].params
    assert guard.skip(point(batch=8, out=4)) is None  # the OOM batch itself is not "larger"
    assert guard.skip(point(batch=4, out=4)) is None
    assert guard.skip(point(batch=32, out=5)) is None  # another series
    assert guard.skip(point(batch=32, out=4, backend="static")) is None
    assert guard.skip(point(batch=32, out=4, method="flap")) is None


def test_guard_keeps_the_smallest_oom_batch():
    guard = OomGuard()
    base = dict(model="tiny", method="dense", params=1, weight_bytes=4, input_tokens=8, output_tokens=4,
                backend="eager", dtype="float32", device="cpu")
    guard.record(point(batch=32, out=4), Measurement(batch_size=32, oom=True, **base))
    guard.record(point(batch=16, out=4), Measurement(batch_size=16, oom=True, **base))
    guard.record(point(batch=4, out=4), Measurement(batch_size=4, oom=False, **base))
    assert guard.skip(point(batch=16, out=4)) is None
    assert guard.skip(point(batch=24, out=4)).oom_skipped


def test_cpu_allocator_message_counts_as_oom(model, monkeypatch):
    def generate(**kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(model, "generate", generate)
    assert measure(model, point(), rounds=1).oom


def test_oom_wrapped_by_the_compiler_counts_as_oom(model, monkeypatch):
    def generate(**kwargs):
        try:
            raise torch.OutOfMemoryError("CUDA error")
        except torch.OutOfMemoryError as exc:
            raise RuntimeError("backend='inductor' raised an error") from exc

    monkeypatch.setattr(model, "generate", generate)
    assert measure(model, point(), rounds=1).oom


def test_other_errors_are_not_oom(model, monkeypatch):
    def generate(**kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(model, "generate", generate)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        measure(model, point(), rounds=1)


def test_oom_leaves_no_tensor_alive(model, monkeypatch):
    held = []

    def generate(**kwargs):
        big = torch.empty(1 << 20)
        held.append(weakref.ref(big))
        cycle = {"big": big}
        cycle["self"] = cycle  # only a garbage collection frees this
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(model, "generate", generate)
    assert measure(model, point(), rounds=1).oom
    assert held and held[0]() is None


# --- serialisation --------------------------------------------------------------------------------


def test_measurement_round_trips_through_json(model):
    m = measure(model, point(batch=1, out=3), rounds=2)
    data = json.loads(json.dumps(m.to_dict()))
    assert set(data) == SCHEMA_FIELDS
    assert data["schema"] == 2 and data["id"] == "tiny-dense-in8-out3-M1-eager"
    assert Measurement.from_dict(data) == m


def test_oom_measurement_serialises_null_timings(model, monkeypatch):
    oom_for_large_batches(model, monkeypatch, threshold=1)
    data = measure(model, point(), rounds=1).to_dict()
    assert data["oom"] is True
    assert all(data[k] is None for k in ("latency_s", "tokens_per_s", "ttft_s", "tpot_s", "decode_bw_frac"))
    assert Measurement.from_dict(json.loads(json.dumps(data))).oom


def test_from_dict_rejects_other_schema_and_bad_id(model):
    data = measure(model, point(batch=1, out=2), rounds=1).to_dict()
    with pytest.raises(UserError, match="schema 1"):
        Measurement.from_dict({**data, "schema": 1})
    with pytest.raises(UserError, match="does not match"):
        Measurement.from_dict({**data, "id": "other"})
    with pytest.raises(UserError, match="params"):
        Measurement.from_dict({k: v for k, v in data.items() if k != "params"})


def test_copy_bandwidth_is_measured_once_per_device():
    first = device_copy_bytes_per_s("cpu")
    assert first > 1e8  # any machine copies more than 100 MB/s
    assert device_copy_bytes_per_s(torch.device("cpu")) is first
