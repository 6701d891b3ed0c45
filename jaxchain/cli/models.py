"""``jaxchain generate`` and ``jaxchain export`` (the ``train`` extra; export, the ``hf``
extra too)."""

import argparse
import pathlib
import sys

from jaxchain.cli import UsageError, message
from jaxchain.cli._runs import _read_run, _restore, _task


def flags(name: str, p: argparse.ArgumentParser) -> None:
    """The flags of ``generate`` or ``export``."""
    if name == "export":
        p.add_argument(
            "--run", dest="run_dir", required=True, help="a jaxchain finetune run, or a decoder run"
        )
        p.add_argument(
            "--out",
            required=True,
            help="the new directory: config.json, model.safetensors, head.safetensors, "
            "tokenizer.json",
        )
        p.set_defaults(run=_export)
        return
    from jaxchain.train import tasks

    p.add_argument("--run", dest="run_dir", required=True, help="a shakespeare run's directory")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument(
        "--steps",
        type=int,
        default=100,
        help=f"tokens to generate; with the prompt's, at most {tasks.MAX_TOKENS}",
    )
    p.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    p.add_argument("--top-k", type=int, default=40, help="sample among the K likeliest (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seeds the sampling")
    p.set_defaults(run=_generate)


def _generate(args: argparse.Namespace) -> int:
    """Continue --prompt with a trained language model's latest checkpoint."""
    import jax
    from tokenizers import Tokenizer

    from jaxchain import train
    from jaxchain.train import tasks

    run = pathlib.Path(args.run_dir)
    config, tokens = _read_run(run), run / train.TOKENIZER_FILE
    if args.steps < 0 or args.temperature < 0 or args.top_k < 0:
        raise UsageError("generate: --steps, --temperature and --top-k must be >= 0")
    if config.data not in ("shakespeare", "play"):
        raise UsageError(
            f"--run: {run} is a {config.model} run on {config.data}; generate samples "
            "language models (--data shakespeare, or a decoder fine-tuned on a play)"
        )
    if config.model == "decoder":  # its tokens are the run's own
        if not tokens.is_file():
            raise UsageError(f"--run: {run} has no {train.TOKENIZER_FILE}")
        try:
            tokenizer = Tokenizer.from_file(str(tokens))
        except Exception as e:  # tokenizers raises its own error kinds
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(f"--run: {tokens} cannot be read as a tokenizer: {reason}") from None
        text = tasks.Text.of_tokenizer(tokenizer)
    else:
        text = _task(config).data
    try:
        model = tasks.builder(config.model, config.data).build(text, config.task)
    except ValueError as e:  # a fine-tuned decoder's base that is gone
        raise UsageError(message(e)) from None
    params = _restore(run, config, jax.eval_shape(model.init, jax.random.key(0)), model.trainable)
    try:
        generated = tasks.generate_text(
            model,
            text,
            params,
            args.prompt,
            args.steps,
            seq_len=config.task.seq_len,
            seed=args.seed,
            temperature=args.temperature,
            top_k=args.top_k or None,
            progress=_generated(args.steps),
        )
    except ValueError as e:
        raise UsageError(message(e)) from None
    print(generated)
    return 0


GENERATED_EVERY = 256  # tokens between the progress lines of a long generation


def _generated(steps: int):
    """``generate``'s progress: a line on stderr at every :data:`GENERATED_EVERY` tokens of a
    generation longer than that (stdout holds only the text)."""
    if steps <= GENERATED_EVERY:
        return None

    def report(n) -> None:
        if int(n) % GENERATED_EVERY == 0 or int(n) == steps:
            print(f"jaxchain generate: {int(n)}/{steps} tokens", file=sys.stderr, flush=True)

    return report


def _export(args: argparse.Namespace) -> int:
    """Write a fine-tuned MiniLM run's encoder as a Hugging Face BERT directory."""
    import json

    import jax

    from jaxchain import pretrained

    run, out = pathlib.Path(args.run_dir), pathlib.Path(args.out)
    config = _read_run(run)
    if config.model == "decoder":
        return _export_decoder(run, out, config)
    if config.data != "vader":
        raise UsageError(
            f"--run: {run} is a {config.model} run; export writes fine-tuned "
            "MiniLM encoders (jaxchain finetune)"
        )
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out: {out} is not empty; export writes a new directory")
    task = _task(config)
    like = jax.eval_shape(task.init, jax.random.key(0))
    params = _restore(run, config, like, task.trainable)
    if task.merge is not None:  # LoRA: the adapters folded into the weights
        params = task.merge(params)
    source = json.loads((pretrained.minilm_dir() / "config.json").read_text())
    pretrained.save_bert(out, params["encoder"], source, head=params["head"])
    print(
        f"{config.task.finetuning.strategy} run {run} -> {out} (config.json, model.safetensors, "
        f"{pretrained.HEAD_FILE}, tokenizer files)"
    )
    return 0


def _export_decoder(run: pathlib.Path, out: pathlib.Path, config) -> int:
    """Write a decoder run's latest params as a Hugging Face Llama directory."""
    import jax
    from tokenizers import Tokenizer

    from jaxchain import nn, pretrained, train
    from jaxchain.train import tasks

    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out: {out} is not empty; export writes a new directory")
    if config.data == "play":  # a fine-tuned Llama: its base's shapes, LoRA merged
        task = _task(config)
        params = _restore(run, config, jax.eval_shape(task.init, jax.random.key(0)), task.trainable)
        params = (task.merge(params) if task.merge else params)["decoder"]
    else:
        tokenizer = Tokenizer.from_file(str(run / train.TOKENIZER_FILE))
        a = config.task.architecture
        dims = tasks.decoder_dims(a.hidden, a.layers)
        like = jax.eval_shape(
            lambda: nn.decoder.init(jax.random.key(0), tokenizer.get_vocab_size(), **dims)
        )
        params = _restore(run, config, like)
    pretrained.save_llama(out, params, tokenizer=run / train.TOKENIZER_FILE)
    files = "config.json, model.safetensors, tokenizer.json, generation_config.json"
    print(f"decoder run {run} -> {out} ({files})")
    return 0
