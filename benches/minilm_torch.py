"""PyTorch's time for the MiniLM bench of benches/models.rs: all-MiniLM-L6-v2 embedding one
12-token sentence and a batch of 8, on 1 and 2 threads, padded to 128 tokens (what nn
computes) and unpadded (what sentence-transformers does for short sentences).

    python benches/minilm_torch.py $NN_MINILM_DIR
"""

import statistics
import sys
import time

import torch
from transformers import AutoModel

IDS = [101, 1996, 4937, 7719, 2006, 1996, 13523, 2058, 1996, 4586, 1012, 102]


def embed(model, ids, mask):
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
    return torch.nn.functional.normalize(pooled, dim=1)


def median_ms(fn, reps=30):
    for _ in range(5):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    model = AutoModel.from_pretrained(sys.argv[1]).eval()
    print(f"torch {torch.__version__}")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for batch in (1, 8):
            for length in (len(IDS), 128):
                ids = torch.zeros(batch, length, dtype=torch.long)
                mask = torch.zeros(batch, length, dtype=torch.long)
                ids[:, : len(IDS)] = torch.tensor(IDS)
                mask[:, : len(IDS)] = 1
                with torch.inference_mode():
                    ms = median_ms(lambda: embed(model, ids, mask))
                print(f"threads {threads} batch {batch} padded to {length:3}: {ms:7.2f} ms")


if __name__ == "__main__":
    main()
