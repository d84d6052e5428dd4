"""Generation backends: `generate(conversations) -> [Generation]` for a batch of conversations.

`HFBackend` runs a local causal LM (the model stage 02 trained, or the untrained one) with batched,
left-padded generation; `OpenAIBackend` asks any OpenAI-compatible chat endpoint; `ServedBackend`
asks the model trained here behind a server stage 03 started itself (`inference.serve`,
lib/models/served.py). `make_backend` picks the one `inference.backend` names; `closing` stops what a
backend started.
"""
from __future__ import annotations

import json

from lib.common import config, keys, resume
from lib.common.settings import Profile
from lib.models import model as model_lib
from lib.models import served
from lib.models.prefix_cache import PrefixCache

class Generation:
    __slots__ = ("text", "tokens", "truncated")

    def __init__(self, text: str, tokens: int = 0, truncated: bool = False):
        self.text, self.tokens, self.truncated = text, tokens, truncated


# The chat template renders every turn as "Role: value\n"; a model that runs past its eos into the
# next turn is cut there.
_TURN_STARTS = ("\nFunction: ", "\nUser: ", "\nSystem: ", "\nAssistant: ")


def cut_at_next_turn(text: str) -> str:
    ends = [text.find(t) for t in _TURN_STARTS if text.find(t) >= 0]
    return text[:min(ends)] if ends else text


def attention_kernels(device, cudnn: bool = False):
    """The scaled-dot-product attention kernels generate may pick on `device`. On CUDA, cuDNN's is
    left out unless `cudnn`: it builds a plan per shape, and each decode step attends over one more
    key than the last, so every step of a new turn paid that build (on an H200, half precision
    decoded at 65-78 ms a step with it, 12-17 without; bench/README.md)."""
    import contextlib

    if device.type != "cuda" or cudnn:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


class HFBackend:
    """A local causal LM: batched generation with KV cache and left padding.

    Prompts are the conversation rendered with the tokenizer's chat template (the training one,
    add_generation_prompt=True) and tokenized without extra special tokens, as training did. A prompt
    longer than the model's positions minus max_new_tokens loses its oldest tokens (left truncation)
    and is counted. temperature > 0 samples (do_sample) with torch seeded from the config seed and a
    call counter before each batch, so a run is reproducible for the same batches; temperature 0 is
    greedy. Generation stops at eos or after max_new_tokens.

    With `decode_chunk` (inference.decode_chunk, on the prefix cache) a generate call writes at most
    that many tokens; `advance` hands back a row that has not ended as its tokens so far, and its
    next call continues it from its cached keys and values. Run by lib.infer.inference.run_groups, a turn
    that ends leaves the batch at once and a waiting query takes its place, instead of every row
    waiting for the batch's longest turn (continuous batching, a chunk at a time). Greedy turns are
    the same tokens either way; sampling draws other random numbers.
    """

    # Each knob is one of generate's or the prefix cache's; tests and bench build one without a profile.
    def __init__(self, model, tokenizer, max_new_tokens: int, temperature: float, seed: int,
                 max_positions: int | None = None, reuse_cache: bool = False, cache_capacity: int = 16,
                 decode_chunk: int | None = None):
        import torch     # heavy: only a local model needs it

        self.torch, self.model, self.tokenizer = torch, model.eval(), tokenizer
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, temperature, seed
        self.max_positions = max_positions or model.config.max_position_embeddings
        self.max_prompt = self.max_positions - max_new_tokens
        if self.max_prompt <= 0:
            raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room in {self.max_positions} positions")
        self.calls = 0
        # inference.reuse_kv_cache: the key/value tensors of earlier prompts (lib/models/prefix_cache.py)
        self.prefix_cache = PrefixCache(cache_capacity) if reuse_cache else None
        if decode_chunk and not reuse_cache:
            raise ValueError("inference.decode_chunk continues turns from the key/value cache: "
                             "set inference.reuse_kv_cache: true, or decode_chunk: null")
        self.decode_chunk = decode_chunk
        self.cudnn_attention = False
        tokenizer.padding_side = "left"

    def close(self) -> None:
        """Nothing to stop: the model is in this process."""

    def render(self, conversation: list[dict]) -> str:
        """The prompt as text: the conversation in the chat template, ending with the generation
        prompt the model continues."""
        return self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)

    def prompt_tokens(self, conversation: list[dict]) -> int:
        """The rendered prompt's length in tokens, before any truncation (compare `max_prompt`)."""
        return len(self.tokenizer(self.render(conversation), add_special_tokens=False)["input_ids"])

    def encode(self, conversation: list[dict]) -> tuple[list[int], bool]:
        ids = self.tokenizer(self.render(conversation), add_special_tokens=False)["input_ids"]
        if len(ids) > self.max_prompt:
            return ids[-self.max_prompt:], True
        return ids, False

    def generate(self, conversations: list[list[dict]]) -> list[Generation]:
        """Whole turns for a batch of conversations (`advance` until each row has ended)."""
        results, partials = [None] * len(conversations), [[] for _ in conversations]
        todo = list(range(len(conversations)))
        while todo:
            outcomes = self.advance([conversations[i] for i in todo], [partials[i] for i in todo])
            for i, outcome in zip(todo, outcomes):
                if isinstance(outcome, Generation):
                    results[i] = outcome
                else:
                    partials[i] = outcome
            todo = [i for i in todo if results[i] is None]
        return results

    def advance(self, conversations: list[list[dict]], partials: list[list[int]]) -> list:
        """One generate call: for each conversation, continuing the turn whose first tokens are in
        `partials` ([] to start one), its finished Generation, or (decode_chunk reached before eos
        and max_new_tokens) the turn's token ids so far, to pass back in the next call. Every
        forward pass in it (the prefix cache's prefill too) runs with attention_kernels."""
        with attention_kernels(self.model.device, self.cudnn_attention):
            return self._advance(conversations, partials)

    def _advance(self, conversations: list[list[dict]], partials: list[list[int]]) -> list:
        torch = self.torch
        encoded = [self.encode(c) for c in conversations]
        prompts = [ids + partial for (ids, _), partial in zip(encoded, partials)]
        room = max(self.max_new_tokens - len(partial) for partial in partials)
        pad = self.tokenizer.pad_token_id
        # Inputs go where the model is (the GPU when load_hf_backend found one).
        device = self.model.device
        if self.prefix_cache is not None:
            for ids in prompts:
                self.prefix_cache.extend(self.model, ids)
            input_ids, attention, cache = self.prefix_cache.assemble(prompts, pad, device)
        else:
            width = max(map(len, prompts))
            input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompts], device=device)
            attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=device)
            cache = None
        sample = self.temperature and self.temperature > 0
        kwargs = dict(do_sample=True, temperature=self.temperature, top_k=0, top_p=1.0) if sample \
            else dict(do_sample=False)
        if sample:      # greedy needs no seed, and leaves a training run's random state alone
            torch.manual_seed(self.seed + self.calls)
        if cache is not None:
            kwargs["cache"] = cache
        self.calls += 1
        with torch.no_grad():
            out = self.model.generate(input_ids=input_ids, attention_mask=attention, use_cache=True,
                                      max_new_tokens=min(self.decode_chunk or room, room), pad_token_id=pad,
                                      eos_token_id=self.tokenizer.eos_token_id,
                                      return_dict_in_generate=True, **kwargs)
        width, eos = input_ids.shape[1], self.tokenizer.eos_token_id
        outcomes, kept = [], []
        for row, partial, (_, truncated) in zip(out.sequences[:, width:].cpu().tolist(), partials, encoded):
            ended = eos in row
            n = row.index(eos) + 1 if ended else len(row)
            kept.append(n)
            turn = (partial + row[:n])[:self.max_new_tokens]
            if ended or len(turn) == self.max_new_tokens:
                text = self.tokenizer.decode(turn, skip_special_tokens=True)
                outcomes.append(Generation(cut_at_next_turn(text), len(turn), truncated))
            else:
                outcomes.append(turn)
        if self.prefix_cache is not None:
            self.prefix_cache.store(prompts, attention, out.sequences, out.cache, kept)
        return outcomes


def inference_device(dtype: str | None) -> tuple[str, str]:
    """(device, dtype) for generation: the GPU when there is one, in inference.dtype (null: the
    saved dtype). On a CPU float16 is slow or unsupported, so it runs as float32; bfloat16 is kept
    where the CPU has native bf16 matrix units (AVX512-BF16 or AMX: about 2x float32,
    bench/README.md), else float32 too."""
    import torch

    if torch.cuda.is_available():
        return "cuda", dtype or "auto"
    if dtype == "bfloat16" and cpu_has_bf16():
        return "cpu", "bfloat16"
    return "cpu", "float32" if dtype in ("float16", "bfloat16") else dtype or "auto"


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (oneDNN's AVX512-BF16 or AMX paths)."""
    import torch

    return bool(getattr(torch.backends.mkldnn, "is_available", lambda: False)()) and \
        torch.ops.mkldnn._is_mkldnn_bf16_supported()


def model_folder(cfg: Profile, model_dir=None):
    """The model trained in stage 02: outputs/<profile>/model/ unless inference.model_dir is set."""
    folder = config.path(cfg, model_dir or cfg.inference.model_dir or f"{cfg.output_dir}/model")
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"no model at {folder}: run the training stage (02) first or set inference.model_dir")
    return folder


def load_hf_backend(cfg: Profile, model_dir=None) -> HFBackend:
    """The model trained in stage 02 (`model_folder`), in this process."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    inference_cfg = cfg.inference
    folder = model_folder(cfg, model_dir)
    device, dtype = inference_device(inference_cfg.dtype)
    model = AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True, dtype=dtype).to(device)
    if (folder / "tokenizer_config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        tokenizer.chat_template = cfg.model.chat_template
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    else:
        tokenizer = model_lib.load_tokenizer(cfg)
    backend = hf_backend(cfg, model, tokenizer)
    backend.fingerprint = resume.file_digest(folder)
    return backend


def hf_backend(cfg: Profile, model, tokenizer) -> HFBackend:
    """HFBackend with the profile's inference settings (the trained and the untrained model alike)."""
    inference_cfg = cfg.inference
    return HFBackend(model, tokenizer, inference_cfg.max_new_tokens, inference_cfg.temperature, cfg.seed,
                     reuse_cache=bool(inference_cfg.reuse_kv_cache),
                     cache_capacity=2 * inference_cfg.batch_size,
                     decode_chunk=inference_cfg.decode_chunk)


def untrained_backend(cfg: Profile):
    """Stage 03's HF backend around the model as stage 02 started from: the hub/local base model,
    or the tiny OPT initialised from the same seed (stage 02 seeds, then builds it)."""
    import torch        # heavy: only a local model needs it
    from transformers import set_seed

    inference_cfg = cfg.inference
    tokenizer = model_lib.load_tokenizer(cfg)
    set_seed(cfg.seed)
    model = model_lib.load_model(cfg, tokenizer)
    device, dtype = inference_device(inference_cfg.dtype)      # as stage 03 loads the trained one
    model = model.to(device) if dtype == "auto" else model.to(device=device, dtype=getattr(torch, dtype))
    backend = hf_backend(cfg, model, tokenizer)
    # What stage 03 resumes on: this same starting model, its settings and the tokenizer stage 01 trained.
    tokenizer_dir = config.path(cfg, cfg.output_dir) / "tokenizer"
    backend.fingerprint = "untrained " + json.dumps(
        {"model": {k: v for k, v in config.as_dict(cfg.model).items() if k != "chat_template"}, "seed": cfg.seed,
         "tokenizer": resume.file_digest(tokenizer_dir) if tokenizer_dir.exists() else None},
        sort_keys=True, default=str)
    return backend


class EndpointUnavailable(RuntimeError):
    """The OpenAI-compatible endpoint stage 03 generates through does not answer (refused, timed out
    or an HTTP 5xx, still after the client's retries): the stage stops, keeping every finished query,
    as lib.toolbench.environments.EnvUnavailable stops it for the tool environment."""


class OpenAIBackend:
    """Any OpenAI-compatible chat endpoint through the `openai` client.

    The conversation goes as chat messages. Function turns (observations) go, as
    inference.openai_function_role says, as user messages prefixed "Observation: " (`user`: plain
    chat endpoints have no function role without native function calling), or with their own
    `function` role (`function`: a server that applies this project's chat template to a model
    trained here, such as `transformers serve` on `outputs/<profile>/model`, then sees the turns
    exactly as training and the in-process backend render them). A batch's conversations are sent
    at once, each on a thread of its own, so a server that batches (vLLM) gets them together. The
    key comes from the env var the config names and is never stored.
    """

    # The OpenAI client's and the chat request's own knobs; tests build one with a fake client, no profile.
    def __init__(self, base_url: str, model: str, api_key: str, max_new_tokens: int, temperature: float,
                 seed: int | None = None, client=None, function_role: str = "user", timeout: float = 600):
        import openai

        if function_role not in ("user", "function"):
            raise ValueError(f"inference.openai_function_role must be user or function, got {function_role!r}")
        self.base_url = base_url
        self.client = client or openai.OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=2,
                                              timeout=timeout)
        self.model, self.max_new_tokens, self.temperature, self.seed = model, max_new_tokens, temperature, seed
        self.function_role = function_role
        # The endpoint's model, its positions and its tokenizer are the server's: unknown here.
        self.max_positions = self.max_prompt = None

    @staticmethod
    def chat_messages(conversation: list[dict], function_role: str = "user") -> list[dict]:
        return [{"role": "user", "content": "Observation: " + m["content"]}
                if m["role"] == "function" and function_role == "user"
                else {"role": m["role"], "content": m["content"]} for m in conversation]

    def render(self, conversation: list[dict]) -> str:
        """The prompt as sent: the chat messages, one JSON object a line (the endpoint applies its
        own template), so a longer conversation's text extends a shorter one's, as with HFBackend."""
        return "".join(json.dumps(m, ensure_ascii=False) + "\n"
                       for m in self.chat_messages(conversation, self.function_role))

    def prompt_tokens(self, conversation: list[dict]) -> None:
        """Unknown before sending: the endpoint counts the prompt with its own tokenizer."""
        return None

    def request(self, conversation: list[dict]) -> dict:
        """The chat request's arguments for one conversation (ServedBackend adds the server's own)."""
        return dict(model=self.model, messages=self.chat_messages(conversation, self.function_role),
                    temperature=self.temperature, max_tokens=self.max_new_tokens, seed=self.seed)

    def ask(self, conversation: list[dict]) -> Generation:
        import openai

        try:
            reply = self.client.chat.completions.create(**self.request(conversation))
        except (openai.APIConnectionError, openai.InternalServerError) as err:
            raise EndpointUnavailable(self.unavailable(err)) from err
        usage = getattr(reply, "usage", None)
        return Generation(reply.choices[0].message.content or "", getattr(usage, "completion_tokens", 0) or 0)

    def unavailable(self, err: Exception) -> str:
        """What EndpointUnavailable says: the endpoint and the client's last error."""
        return f"the endpoint {self.base_url} does not answer ({type(err).__name__}: {err})"

    def generate(self, conversations: list[list[dict]]) -> list[Generation]:
        if len(conversations) <= 1:
            return [self.ask(c) for c in conversations]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(conversations), thread_name_prefix="openai") as pool:
            return list(pool.map(self.ask, conversations))

    def close(self) -> None:
        """Nothing to stop: the endpoint is the user's."""


class ServedBackend(OpenAIBackend):
    """The model trained here, behind the server stage 03 started on its folder (`inference.serve`:
    lib.models.served), asked so that its turns are the in-process HFBackend's at temperature 0:

    - the server applies the profile's chat template (its serving folder carries it), and each
      observation goes in its own `function` role, as training and HFBackend render it;
    - a prompt longer than the model's positions minus max_new_tokens keeps its last tokens, as
      HFBackend.encode does: the server cuts it (transformers serve: the serving folder's tokenizer
      truncates on the left, asked through chat_template_kwargs; vLLM: truncate_prompt_tokens), and
      the tokenizer here counts it, so `truncated` is HFBackend's;
    - generation stops at eos or after max_tokens, the server decodes without special tokens and
      strips nothing, and a turn that runs on into the next is cut there (`cut_at_next_turn`);
    - above temperature 0, transformers serve samples only if asked (its default is the folder's
      generation config: greedy), so it is asked to as HFBackend does (top_k 0, top_p 1). Samples
      are not HFBackend's: each request is seeded alone, not each batch.
    """

    # The server, the tokenizer here, and the knobs OpenAIBackend takes.
    def __init__(self, server, tokenizer, max_positions: int, max_new_tokens: int, temperature: float,
                 seed: int | None = None, kind: str = "transformers", timeout: float = 600, client=None):
        super().__init__(server.base_url, server.model, "", max_new_tokens, temperature, seed, client=client,
                         function_role="function", timeout=timeout)
        self.server, self.tokenizer, self.kind = server, tokenizer, kind
        self.max_positions, self.max_prompt = max_positions, max_positions - max_new_tokens
        if self.max_prompt <= 0:
            raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room in {max_positions} positions")

    def render(self, conversation: list[dict]) -> str:
        """The prompt as the server renders it: the profile's chat template, with the generation prompt."""
        return self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)

    def prompt_tokens(self, conversation: list[dict]) -> int:
        """The rendered prompt's length in tokens, before the server cuts it to `max_prompt`."""
        return len(self.tokenizer(self.render(conversation), add_special_tokens=False)["input_ids"])

    def request(self, conversation: list[dict]) -> dict:
        args = super().request(conversation)
        if self.kind == "vllm":
            extra = {"truncate_prompt_tokens": self.max_prompt}
        else:
            extra = {"chat_template_kwargs": {"truncation": True, "max_length": self.max_prompt}}
        return {**args, "extra_body": {**extra, **served.sampling_body(self.kind, self.temperature)}}

    def ask(self, conversation: list[dict]) -> Generation:
        reply = super().ask(conversation)
        return Generation(cut_at_next_turn(reply.text), reply.tokens,
                          self.prompt_tokens(conversation) > self.max_prompt)

    def unavailable(self, err: Exception) -> str:
        return (f"the model server {self.server.name} at {self.server.url} does not answer "
                f"({type(err).__name__}: {err}); it is {self.server.state()}. {self.server.log_lines()}")

    def close(self) -> None:
        """This backend no longer needs the server: the last one to close stops it."""
        if self.server is not None:
            served.release(self.server)
            self.server = None


def served_backend(cfg: Profile, model_dir=None) -> ServedBackend:
    """ServedBackend on the model trained in stage 02 (`model_folder`), served by inference.serve on
    the device and dtype HFBackend would take; the server's output goes to
    outputs/<profile>/served-<kind>.log."""
    from transformers import AutoConfig, AutoTokenizer

    inference_cfg = cfg.inference
    folder, kind = model_folder(cfg, model_dir), inference_cfg.serve
    device, dtype = inference_device(inference_cfg.dtype)
    server = served.shared(kind, folder, cfg.model.chat_template, config.path(cfg, cfg.output_dir) / f"served-{kind}.log",
                           device=device, dtype=dtype, seed=cfg.seed, extra=inference_cfg.serve_args,
                           timeout_s=inference_cfg.serve_timeout_s or 600)
    try:
        tokenizer = AutoTokenizer.from_pretrained(server.model)    # the serving folder's: the server's own
        positions = AutoConfig.from_pretrained(server.model).get_text_config().max_position_embeddings
        backend = ServedBackend(server, tokenizer, positions, inference_cfg.max_new_tokens, inference_cfg.temperature,
                                cfg.seed, kind, timeout=inference_cfg.openai_timeout_s or 600)
    except BaseException:
        served.release(server)
        raise
    # What stage 03 resumes on: the weights and tokenizer, and how they are served (not the port).
    backend.fingerprint = f"served by {kind} {' '.join(map(str, inference_cfg.serve_args or []))} " + \
        resume.file_digest(folder)
    return backend


def closing(backend):
    """`with closing(backend):` stops what the backend started (ServedBackend: its model server; an
    LLM judge's too, lib.judge.llm_judge) on every way out of the block, KeyboardInterrupt included.
    A backend without `close` (None: the offline judge) passes through."""
    import contextlib

    return contextlib.closing(backend) if hasattr(backend, "close") else contextlib.nullcontext(backend)


def advance_batch(backend, entries: list) -> tuple[list, list]:
    """One generate call for a batch of conversations each driven by a coroutine. An entry holds
    `loop` (a generator that yields the conversation needing the next assistant turn and receives
    its text), `prompt` (what it yielded last), `partial` (its turn's tokens so far), `tokens` and
    `truncated`. Returns (the entries still going, in order; [(entry, its loop's return value)] for
    those whose loop ended). A backend that can hand back unfinished turns (HFBackend with
    decode_chunk) is driven a chunk at a time, so a waiting conversation can join as soon as any
    turn in the batch ends."""
    advance = getattr(backend, "advance", None)
    prompts = [e.prompt for e in entries]
    generations = advance(prompts, [e.partial for e in entries]) if advance else backend.generate(prompts)
    going, ended = [], []
    for entry, gen in zip(entries, generations):
        if isinstance(gen, list):       # a turn not ended at decode_chunk keeps its place
            entry.partial = gen
            going.append(entry)
            continue
        entry.partial = []
        entry.tokens += gen.tokens
        entry.truncated += int(gen.truncated)
        try:
            entry.prompt = entry.loop.send(gen.text)
            going.append(entry)
        except StopIteration as stop:
            ended.append((entry, stop.value))
    return going, ended


def make_backend(cfg: Profile):
    inference_cfg = cfg.inference
    if inference_cfg.backend == "hf":
        return load_hf_backend(cfg)
    if inference_cfg.backend == "openai" and inference_cfg.serve:
        return served_backend(cfg)
    if inference_cfg.backend == "openai":
        if not inference_cfg.openai_base_url or not inference_cfg.openai_model:
            raise ValueError("inference.backend openai needs inference.openai_base_url and inference.openai_model "
                             "(or inference.serve, to start a server on the model trained here)")
        backend = OpenAIBackend(inference_cfg.openai_base_url, inference_cfg.openai_model,
                                keys.secret(inference_cfg.openai_api_key_env, required=False), inference_cfg.max_new_tokens,
                                inference_cfg.temperature, cfg.seed,
                                function_role=inference_cfg.openai_function_role or "user",
                                timeout=inference_cfg.openai_timeout_s or 600)
        backend.fingerprint = f"{inference_cfg.openai_base_url} {inference_cfg.openai_model}" + (
            " function-role" if backend.function_role == "function" else "")
        return backend
    raise ValueError(f"inference.backend must be hf or openai, got '{inference_cfg.backend}'")
