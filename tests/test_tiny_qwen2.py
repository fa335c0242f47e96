"""The tiny Qwen2 test model and its byte-level tokenizer load offline with the Auto classes,
round-trip the fixture texts, generate on CPU, and carry the real-path building blocks end to end:
fixture files -> build_dataset -> prompts -> sampled thinking -> episodes -> forced answer -> grade."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from mrt_core.envs.math_text import MathEnv
from mrt_lib.common import Paths
from mrt_lib.config import load_params
from mrt_lib.data import load_problems
from mrt_lib.grading import MathGrader
from tasks.build_dataset import run_build_dataset
from tests.tiny_qwen2 import build_tiny_qwen2

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "math"


def fixture_texts() -> list[str]:
    texts = []
    for name in ("train.jsonl", "test.jsonl"):
        for line in (FIXTURES / name).read_text().splitlines():
            try:
                texts += [v for v in json.loads(line).values() if isinstance(v, str)]
            except json.JSONDecodeError:
                texts.append(line)
    return texts


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # One thread: a hidden size of 32 is all overhead, and two threads on a shared 2-core
    # machine made each matrix product ~30x slower (measured).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path = build_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2"), fixture_texts())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    yield path, tokenizer, model
    torch.set_num_threads(threads)


def math_params(tmp_path, model_path):
    raw = {"env": {"kind": "math"}, "policy": {"init": "pretrained", "model": str(model_path), "max_context": 1024},
           "evaluate": {"budgets": [16, 32], "extrapolation_budgets": []},
           "build_dataset": {"max_bad_share": 0.15, "source": {
               "kind": "files", "columns": {"problem": "problem", "answer": "answer", "solution": "solution"},
               "files": {"train": [str(FIXTURES / "train.jsonl")], "test": [str(FIXTURES / "test.jsonl")]}}}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_params(path)


def test_loads_as_qwen2_and_round_trips_every_text(tiny):
    path, tokenizer, model = tiny
    assert type(tokenizer).__name__ == "Qwen2Tokenizer" and type(model).__name__ == "Qwen2ForCausalLM"
    assert {"vocab.json", "merges.txt", "tokenizer.json", "model.safetensors"} <= {p.name for p in path.iterdir()}
    template = math_params(path.parent, path).template.spec()
    extra = [template.prompt, template.termination_text, template.continuation_text, "a\n\nb\r\n\t", "é∑√ x² ½ 🙂",
             "  two  spaces\n\n\n", ""]
    for text in fixture_texts() + extra:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    assert len(tokenizer("</think>", add_special_tokens=False)["input_ids"]) == 1  # one token: a clean stop
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "What is 1+1?"}], tokenize=False,
                                         add_generation_prompt=True)
    assert chat == "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n<think>\n"


def test_generates_on_cpu(tiny):
    _, tokenizer, model = tiny
    batch = tokenizer(["What is $2+3$?", "Solve $3x = 12$."], return_tensors="pt", padding=True, padding_side="left")
    out = model.generate(**batch, max_new_tokens=8, do_sample=True, top_k=0, pad_token_id=tokenizer.pad_token_id)
    assert out.shape == (2, batch["input_ids"].shape[1] + 8)


def test_real_path_blocks_end_to_end(tiny, tmp_path):
    path, tokenizer, model = tiny
    params = math_params(tmp_path, path)
    paths = Paths(tmp_path)
    run_build_dataset(params, paths)
    problems = load_problems(paths, "test")[:3]
    with MathGrader(timeout_s=2.0) as grader:
        env = MathEnv(params.template.spec(), grader)
        torch.manual_seed(0)
        for problem in problems:
            prompt_ids = tokenizer(problem.prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
            thinking = model.generate(prompt_ids, max_new_tokens=16, do_sample=True, top_k=0,
                                      pad_token_id=tokenizer.pad_token_id)[0, prompt_ids.shape[1]:].tolist()
            pieces = [tokenizer.decode(thinking[: i + 1]) for i in range(len(thinking))]
            text = pieces[-1] if pieces else ""
            ends = [len(p) for p in pieces]
            # token spans of the decoded text (a token that completes a multi-byte character owns it)
            offsets = [(a, b) for a, b in zip([0] + ends[:-1], ends) if b > a]
            episodes = env.episodes(text, offsets if offsets else None)
            assert "".join(text[e.char_start:e.char_end] for e in episodes) == text
            forced = prompt_ids[0].tolist() + thinking + tokenizer(env.termination_text, add_special_tokens=False)[
                "input_ids"]
            answer_ids = []
            for _ in range(env.answer_length(problem)):
                logits = model(torch.tensor([forced + answer_ids])).logits[0, -1]
                answer_ids.append(int(torch.multinomial(torch.softmax(logits, -1), 1)))
                if env.answer_complete(tokenizer.decode(answer_ids)):
                    break
            answer = env.forced_answer(tokenizer.decode(answer_ids))
            assert answer is None or isinstance(answer, str)
            assert env.grade(answer, problem) in (True, False)
        # The same chain with a known continuation: the reference written in another form is right.
        first = problems[0]
        assert (first.answer, env.forced_answer("13}.")) == ("13", "13")
        assert env.grade(env.forced_answer("\\frac{26}{2}}"), first) is True
        assert env.grade(env.forced_answer("12}"), first) is False
        assert grader.stats()["error"] == 0
