"""Resuming warm-start SFT: only a checkpoint the Trainer finished writing is resumed from."""

import json

from mrt_lib.training.sft import last_complete_checkpoint


def test_a_checkpoint_cut_short_by_a_kill_is_skipped(tmp_path):
    for step, state in ((2, {"global_step": 2}), (4, {"global_step": 4}), (6, None), (8, "partial")):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "model.safetensors").write_text("weights")
        if state == "partial":
            (d / "trainer_state.json").write_text('{"global_st')  # the kill came mid-write
        elif state is not None:
            (d / "trainer_state.json").write_text(json.dumps(state))
    (tmp_path / "checkpoint-x").mkdir()
    # 8: trainer_state.json half-written; 6: never written (killed while saving the optimizer)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert last_complete_checkpoint(tmp_path / "absent") is None
