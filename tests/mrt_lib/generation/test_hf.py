"""The hf backend's sampling contract and the backend factory."""

import pytest
import torch

from mrt_lib.generation import BackendUnavailable, GenerationBackend, SamplingParams, make_backend
from mrt_lib.generation.hf import HFBackend, StopOnText, trim_completion
from mrt_lib.modeling import build_char_tokenizer


@pytest.fixture(scope="module")
def backend(trained_smoke):
    _, paths, _ = trained_smoke
    return make_backend("hf", str(paths.base_model))


def test_backend_implements_the_protocol(backend):
    assert isinstance(backend, HFBackend) and isinstance(backend, GenerationBackend)


def test_n_samples_per_prompt_aligned_text_and_logprobs(backend):
    tok = backend.tokenizer
    prompts = [tok("Q2:", add_special_tokens=False)["input_ids"], tok("Q2:1<\n", add_special_tokens=False)["input_ids"]]
    out = backend.sample(prompts, SamplingParams(n=3, max_new_tokens=6, logprobs=True, seed=1))
    assert [len(o) for o in out] == [3, 3]
    for prompt, comps in zip(prompts, out):
        for c in comps:
            assert 1 <= len(c.token_ids) <= 6 and c.text == tok.decode(list(c.token_ids))
            # logprobs are the model's own: recompute them teacher-forced
            ids = torch.tensor([list(prompt) + list(c.token_ids)])
            logp = torch.log_softmax(backend.model(input_ids=ids).logits[0].float(), -1)
            ref = [logp[len(prompt) + i - 1, t].item() for i, t in enumerate(c.token_ids)]
            assert c.logprobs == pytest.approx(ref, abs=1e-4)


def test_same_seed_same_samples_and_stop_strings(backend):
    prompt = [backend.tokenizer("Q2:", add_special_tokens=False)["input_ids"]]
    a = backend.sample(prompt, SamplingParams(n=4, max_new_tokens=10, seed=7, stop=("\n",)))
    b = backend.sample(prompt, SamplingParams(n=4, max_new_tokens=10, seed=7, stop=("\n",)))
    assert a == b
    for c in a[0]:
        assert c.finish_reason == "length" or c.text.endswith("\n") or c.token_ids[-1] == backend.tokenizer.eos_token_id
        assert "\n" not in c.text[:-1]


def test_greedy_is_deterministic(backend):
    prompt = [backend.tokenizer("Q2:", add_special_tokens=False)["input_ids"]]
    out = backend.sample(prompt, SamplingParams(n=2, temperature=0, max_new_tokens=5))
    assert out[0][0] == out[0][1]


def test_trim_at_eos_and_stop_string():
    tok = build_char_tokenizer("ab\n")
    ids = tok("ab\nab", add_special_tokens=False)["input_ids"]
    c = trim_completion(ids, tok, ("\n",), {tok.eos_token_id}, [-0.1] * 5)
    assert (c.text, c.finish_reason, c.logprobs) == ("ab\n", "stop", (-0.1, -0.1, -0.1))
    c = trim_completion(ids[:2] + [tok.eos_token_id] + ids[2:], tok, (), {tok.eos_token_id}, None)
    assert c.token_ids[-1] == tok.eos_token_id and c.finish_reason == "stop"
    assert trim_completion(ids, tok, ("zz",), set(), None).finish_reason == "length"


def test_vllm_unavailable_fails_at_once_with_the_install_hint():
    with pytest.raises(BackendUnavailable, match=r"pip install -e '\.\[gpu\]'"):
        make_backend("vllm", "/nonexistent")
    with pytest.raises(BackendUnavailable, match="unknown generation backend"):
        make_backend("tgi", "/nonexistent")


def test_token_logprobs_match_a_plain_forward(backend):
    seqs = [[5, 6, 7, 8], [9, 10]]
    out = backend.token_logprobs(seqs)
    for s, lps in zip(seqs, out):
        logp = torch.log_softmax(backend.model(input_ids=torch.tensor([s])).logits[0].float(), -1)
        assert lps == pytest.approx([logp[i, s[i + 1]].item() for i in range(len(s) - 1)], abs=1e-5)


def test_stop_on_text_finishes_the_rows_that_wrote_a_stop_string_after_the_prompt():
    tok = build_char_tokenizer("ab\n<")
    prompt = tok("a\n", add_special_tokens=False)["input_ids"]  # a stop string in the prompt does not count
    rows = [prompt + tok(s, add_special_tokens=False)["input_ids"] for s in ("abb", "b<\n", "a<<")]
    done = StopOnText(tok, ("\n", "<<"), len(prompt))(torch.tensor(rows), None)
    assert done.tolist() == [False, True, True]


def test_trim_finds_a_stop_string_that_ends_deep_in_a_long_completion():
    tok = build_char_tokenizer("ab<")
    text = "ab" * 300 + "a<<" + "b" * 10
    c = trim_completion(tok(text, add_special_tokens=False)["input_ids"], tok, ("<<",), set(), None)
    assert c.text == "ab" * 300 + "a<<" and c.finish_reason == "stop"
