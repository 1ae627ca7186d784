"""A verl-style post-training step written for TransferQueue's API, run on tqrdma.

It uses only TransferQueue's names: switching is the import below. Rollout writes
prompts and responses (async, key-value tier), reward and old-log-prob stages read
what they need and write a column back (low-level tier: get_meta / get_data /
put), the trainer reads mini-batches, and the step ends by clearing the partition.

    python3 rl_pipeline.py                   # embedded controller and storage unit
    TQ_CONTROLLER=HOST:PORT python3 rl_pipeline.py
"""
import asyncio
import sys

import torch

import tqrdma as tq  # was: import transfer_queue as tq

try:
    from tensordict import TensorDict
except ImportError:  # TransferQueue requires tensordict; tqrdma takes plain dicts too
    def TensorDict(columns, batch_size):  # noqa: N802 - stands in for the class
        return dict(columns)

PROMPTS, GROUP, VOCAB, PROMPT_LEN, MINI_BATCH = 8, 4, 32000, 16, 8


async def rollout(step):
    """Generate GROUP responses per prompt, each of its own length: one key per sample."""
    async def one(p, g):
        key = f"step{step}.p{p}.g{g}"
        n = 4 + (p * GROUP + g) % 13
        fields = {"prompt_ids": torch.randint(0, VOCAB, (PROMPT_LEN,)),
                  "response_ids": torch.randint(0, VOCAB, (n,)),
                  "response_text": f"response {p}.{g}"}
        return await tq.async_kv_put(key, "train", fields=fields,
                                     tag={"prompt": p, "status": "generated"})
    metas = await asyncio.gather(*[one(p, g) for p in range(PROMPTS) for g in range(GROUP)])
    return tq.KVBatchMeta.concat(metas)


def reward_stage(client):
    """The reward model: reads responses, writes one score per sample."""
    while not client.check_consumption_status("reward", "train"):
        meta = client.get_meta(["response_ids"], MINI_BATCH, "train", task_name="reward",
                               timeout_ms=5000)
        data = client.get_data(meta)
        scores = torch.stack([r.float().mean() / VOCAB for r in _rows(data["response_ids"])])
        client.put(TensorDict({"reward": scores}, batch_size=[meta.size]), metadata=meta)


def log_prob_stage(kv_meta):
    """The actor's forward pass, key-value style: by the keys rollout returned."""
    for chunk in kv_meta.chunk(len(kv_meta) // MINI_BATCH):
        data = tq.kv_batch_get_by_meta(chunk, select_fields=["response_ids"])
        log_probs = [-torch.rand(len(r)) for r in _rows(data["response_ids"])]
        tq.kv_batch_put(chunk.keys, "train",
                        fields=TensorDict({"old_log_prob": log_probs}, batch_size=[chunk.size]),
                        tags=[{"status": "scored"}] * chunk.size)


def train_stage(client):
    """The trainer: mini-batches of samples that have every field it needs."""
    fields = ["prompt_ids", "response_ids", "reward", "old_log_prob"]
    seen = 0
    while seen < PROMPTS * GROUP:
        meta = client.get_meta(fields, MINI_BATCH, "train", task_name="actor_update",
                               timeout_ms=5000)
        data = client.get_data(meta)
        assert data["prompt_ids"].shape == (meta.size, PROMPT_LEN)
        assert data["reward"].shape == (meta.size,)
        for r, lp in zip(_rows(data["response_ids"]), _rows(data["old_log_prob"])):
            assert r.shape == lp.shape
        seen += meta.size
    return seen


def _rows(column):
    """The rows of a nested column (a nested tensor or a list of tensors)."""
    return column.unbind() if isinstance(column, torch.Tensor) else column


def main():
    tq.init()
    client = tq.get_client()
    try:
        kv_meta = asyncio.run(rollout(step=0))
        assert len(kv_meta) == PROMPTS * GROUP and kv_meta.fields
        reward_stage(client)
        log_prob_stage(kv_meta)
        listed = tq.kv_list("train")["train"]
        assert all(tag["status"] == "scored" for tag in listed.values()), listed
        trained = train_stage(client)
        texts = tq.kv_batch_get(kv_meta.keys[:2], "train", select_fields="response_text")
        print(f"trained on {trained} samples; first responses: {texts['response_text']}")
        client.clear_partition("train")
        assert "train" not in client.get_partition_list()
    finally:
        tq.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
