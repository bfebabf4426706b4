"""Two torchrun processes (gloo, CPU) with `sharding: ddp` (every process holds the whole model) train the
same reward model as one process does. The sharded default, fsdp, has its own tests (test_fsdp.py,
test_launch.py)."""

import os
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file

from sarm.backbone import load_tokenizer
from sarm.data.records import PreferencePair
from sarm.rm.bradley_terry import BTTrainConfig, train_reward_model
from sarm.rm.models import build_sarm
from sarm.rm.pairs import tokenize_pairs
from sarm.sae.model import SAEConfig, TopKSAE

DRIVER = textwrap.dedent(
    """
    import logging
    import sys
    import torch
    from sarm.backbone import load_tokenizer
    from sarm.rm.bradley_terry import BTTrainConfig, train_reward_model
    from sarm.rm.pairs import tokenize_pairs
    from sarm.rm.models import build_sarm
    from sarm.sae.model import SAEConfig, TopKSAE
    sys.path.insert(0, {tests!r})
    from test_distributed import CONFIG, pairs

    logging.basicConfig(level=logging.INFO)
    source, out_dir = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = build_sarm(source, 2, TopKSAE(32, SAEConfig(64, 4), seed=0))
    train_reward_model(model, tokenize_pairs(load_tokenizer(source), pairs()), BTTrainConfig(**CONFIG), out_dir)
    """
)
CONFIG = {
    "lr": 1e-2,
    "epochs": 2,
    "global_batch": 4,
    "micro_batch": 1,
    "weight_decay": 0.01,
    "sharding": "ddp",
}


def pairs() -> list[PreferencePair]:
    answers = [("yes the answer is true", "no"), ("the sum is two", "sorry I cannot help")]
    return [
        PreferencePair(
            chosen=[
                {"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": answers[i % 2][0]},
            ],
            rejected=[
                {"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": answers[i % 2][1]},
            ],
        )
        for i in range(10)  # 2 full batches + a remainder of 2 per epoch
    ]


def test_two_gloo_processes_under_torchrun_match_one_process(tiny_backbone, tmp_path):
    source = str(tiny_backbone)
    torch.manual_seed(0)
    single = build_sarm(source, 2, TopKSAE(32, SAEConfig(64, 4), seed=0))
    train_reward_model(
        single, tokenize_pairs(load_tokenizer(source), pairs()), BTTrainConfig(**CONFIG), tmp_path / "one"
    )

    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests=os.path.dirname(__file__)))
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [torchrun, "--standalone", "--nproc_per_node", "2", str(driver), source, str(tmp_path / "two")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stderr

    two = load_file(tmp_path / "two" / "reward_model.safetensors")
    one = load_file(tmp_path / "one" / "reward_model.safetensors")
    assert set(one) == set(two) and "decoder.layers.0.self_attn.q_proj.weight" in one
    torch.manual_seed(0)
    untrained = build_sarm(source, 2, TopKSAE(32, SAEConfig(64, 4), seed=0)).state_dict()
    assert not torch.allclose(one["head.weight"], untrained["head.weight"], atol=1e-4)  # training did move it
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-5, rtol=1e-4), name
    one_log = (tmp_path / "one" / "train_log.csv").read_text().splitlines()
    two_log = (tmp_path / "two" / "train_log.csv").read_text().splitlines()
    assert len(one_log) == len(two_log) == 1 + 6  # header + 3 steps x 2 epochs
