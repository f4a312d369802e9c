"""Common model tests every hf_rgbd model family reuses (transformers' `ModelTesterMixin` does not ship in the wheel).

A family's test class subclasses `RgbdModelTestMixin` and provides:

- `model_classes`: the `PreTrainedModel` classes to test (each registered with `register_for_auto_class`);
- `get_config(**overrides)`: a tiny config (modality dropout off unless the overrides ask for it);
- `get_inputs(config, batch_size)`: a dict of input tensors (without labels) for that config;
- `expected_hidden_state_shapes(config, batch_size)`: shapes of `outputs.hidden_states`;
- optionally `get_labels(config, batch_size)`, `modality_input_names`, `modality_options`, and the flags below.

Flags: `has_attentions` (then `expected_attention_shapes(config, batch_size)` too) and `supports_sdpa` turn on the
attention tests; `loss_independent_of_batch_composition = False` (batch norm) compares the gradient-accumulated
loss with the same micro-batches instead of with one large batch.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from transformers import AutoConfig, Trainer, TrainingArguments
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

import hf_rgbd  # noqa: F401  (registers the Auto classes)


def flatten_output(output: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """{"logits": t, "hidden_states.0": t, ...} for every tensor in a ModelOutput / tuple / tensor."""
    if isinstance(output, torch.Tensor):
        return {prefix or "output": output}
    if isinstance(output, ModelOutput):
        items = [(key, value) for key, value in output.items()]
    elif isinstance(output, (tuple, list)):
        items = [(str(index), value) for index, value in enumerate(output)]
    else:
        return {}
    flat = {}
    for key, value in items:
        if value is not None:
            flat.update(flatten_output(value, f"{prefix}.{key}" if prefix else key))
    return flat


def assert_outputs_close(actual: Any, expected: Any, atol: float = 1e-5, rtol: float = 1e-4, what: str = "") -> None:
    actual_flat, expected_flat = flatten_output(actual), flatten_output(expected)
    assert actual_flat.keys() == expected_flat.keys(), f"{what}: output fields differ"
    for key, value in expected_flat.items():
        if value.is_floating_point():
            torch.testing.assert_close(
                actual_flat[key], value, atol=atol, rtol=rtol, msg=lambda m, key=key: f"{what} {key}: {m}"
            )
        else:
            assert torch.equal(actual_flat[key], value), f"{what} {key} differs"


def run_in_fresh_process(
    script: str, arguments: list[str], tmp_path: Path, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run `python -c script *arguments` in `tmp_path` with an empty PYTHONPATH, offline, with its own remote-code
    module cache (the script itself hides hf_rgbd with `sys.modules["hf_rgbd"] = None`)."""
    env = dict(os.environ)
    env.update(
        HF_MODULES_CACHE=str(tmp_path / "modules"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_VERBOSITY="error",
        OMP_NUM_THREADS="1",
        PYTHONPATH="",
    )
    return subprocess.run(
        [sys.executable, "-c", script, *arguments], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def accepts_labels(model_class: type) -> bool:
    return "labels" in inspect.signature(model_class.forward).parameters


class RgbdModelTestMixin:
    model_classes: tuple[type, ...] = ()
    has_attentions: bool = False
    supports_sdpa: bool = False
    loss_independent_of_batch_composition: bool = True
    modality_options: tuple[str, ...] = ("rgbd", "rgb", "depth")
    # inputs a single-modality model needs (the others are dropped in the ablation test)
    modality_input_names: dict[str, tuple[str, ...]] = {
        "rgb": ("pixel_values",),
        "depth": ("depth_values", "depth_mask"),
    }
    atol: float = 1e-5
    # outputs (flattened keys, e.g. "logits_per_rgb") whose (B, B) entries pair samples of the batch with each other
    # (contrastive logits): the batch-size test compares only their diagonal
    batch_coupled_outputs: tuple[str, ...] = ()

    # -------------------------------------------------------------------------------------------- hooks
    def get_config(self, **overrides: Any):
        raise NotImplementedError

    def get_inputs(self, config, batch_size: int = 2) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def expected_hidden_state_shapes(self, config, batch_size: int) -> list[tuple[int, ...]]:
        raise NotImplementedError

    def expected_attention_shapes(self, config, batch_size: int) -> list[tuple[int, ...]]:
        raise NotImplementedError

    def get_labels(self, config, batch_size: int) -> torch.Tensor:
        return torch.arange(batch_size) % config.num_labels

    # -------------------------------------------------------------------------------------------- helpers
    def make_model(self, model_class: type, config=None, seed: int = 0):
        torch.manual_seed(seed)
        return model_class(config if config is not None else self.get_config()).eval()

    def run_model(self, model, inputs: dict[str, torch.Tensor], **kwargs: Any):
        with torch.no_grad():
            return model(**inputs, **kwargs)

    def move_buffers(self, model, inputs: dict[str, torch.Tensor]) -> None:
        """One train-mode forward so that running statistics differ from their initial values."""
        model.train()
        self.run_model(model, inputs)
        model.eval()

    def trainer_loss(self, model, dataset: list[dict], batch_size: int, accumulation: int, output_dir: Path) -> float:
        """`Trainer` training loss of one optimiser step (learning rate 0) on a copy of `model`, batches in order."""
        args = TrainingArguments(
            output_dir=str(output_dir),
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
            learning_rate=0.0,
            weight_decay=0.0,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            use_cpu=True,
            train_sampling_strategy="sequential",
            disable_tqdm=True,
            seed=0,
        )
        trainer = Trainer(model=copy.deepcopy(model), args=args, train_dataset=dataset)
        return trainer.train().training_loss

    # -------------------------------------------------------------------------------------------- tests
    def test_save_load_round_trip(self, tmp_path: Path) -> None:
        config = self.get_config()
        inputs = self.get_inputs(config, 2)
        for model_class in self.model_classes:
            model = self.make_model(model_class, config)
            self.move_buffers(model, inputs)
            folder = tmp_path / model_class.__name__
            model.save_pretrained(folder)
            assert (folder / "model.safetensors").is_file()
            loaded, info = model_class.from_pretrained(folder, output_loading_info=True)
            loaded.eval()
            assert not info["missing_keys"] and not info["unexpected_keys"], info
            expected_state, loaded_state = model.state_dict(), loaded.state_dict()
            assert expected_state.keys() == loaded_state.keys()
            for key, value in expected_state.items():
                assert torch.equal(loaded_state[key], value), f"{model_class.__name__}: {key} changed on load"
            assert_outputs_close(
                self.run_model(loaded, inputs, output_hidden_states=True),
                self.run_model(model, inputs, output_hidden_states=True),
                atol=0,
                rtol=0,
                what=model_class.__name__,
            )

    def test_remote_code_load_without_package(self, tmp_path: Path) -> None:
        config = self.get_config()
        inputs = self.get_inputs(config, 2)
        jobs = []
        for model_class in self.model_classes:
            assert model_class._auto_class is not None, f"{model_class.__name__} is not registered for an Auto class"
            model = self.make_model(model_class, config)
            self.move_buffers(model, inputs)
            folder = tmp_path / model_class.__name__
            model.save_pretrained(folder)
            saved_config = json.loads((folder / "config.json").read_text())
            assert model_class._auto_class in saved_config.get("auto_map", {}), saved_config.get("auto_map")
            assert "AutoConfig" in saved_config["auto_map"]
            torch.save(
                {"inputs": inputs, "expected": flatten_output(self.run_model(model, inputs))}, folder / "check.pt"
            )
            jobs.append({"folder": str(folder), "auto_class": model_class._auto_class, "name": model_class.__name__})
        script = textwrap.dedent(
            """
            import sys
            sys.modules["hf_rgbd"] = None  # the package must not be importable: only the saved code may be used
            import json
            import torch
            import transformers
            try:
                import hf_rgbd  # noqa: F401
            except ImportError:
                pass
            else:
                raise SystemExit("hf_rgbd is importable in the child")
            sys.path.insert(0, sys.argv[2])
            from model_test_mixin_child import flatten
            for job in json.loads(sys.argv[1]):
                auto_class = getattr(transformers, job["auto_class"])
                model = auto_class.from_pretrained(job["folder"], trust_remote_code=True).eval()
                assert type(model).__name__ == job["name"], type(model)
                assert not type(model).__module__.startswith("hf_rgbd"), type(model).__module__
                check = torch.load(job["folder"] + "/check.pt")
                with torch.no_grad():
                    actual = flatten(model(**check["inputs"]))
                assert actual.keys() == check["expected"].keys(), (actual.keys(), check["expected"].keys())
                for key, value in check["expected"].items():
                    torch.testing.assert_close(actual[key], value, atol=1e-6, rtol=1e-6)
            print("REMOTE-OK")
            """
        )
        helper = tmp_path / "helper"
        helper.mkdir()
        (helper / "model_test_mixin_child.py").write_text(
            "import torch\nfrom transformers.utils import ModelOutput\n\n"
            "def flatten(output, prefix=''):\n"
            "    if isinstance(output, torch.Tensor):\n"
            "        return {prefix or 'output': output}\n"
            "    if isinstance(output, ModelOutput):\n"
            "        items = list(output.items())\n"
            "    elif isinstance(output, (tuple, list)):\n"
            "        items = [(str(i), v) for i, v in enumerate(output)]\n"
            "    else:\n"
            "        return {}\n"
            "    flat = {}\n"
            "    for key, value in items:\n"
            "        if value is not None:\n"
            "            flat.update(flatten(value, f'{prefix}.{key}' if prefix else key))\n"
            "    return flat\n"
        )
        result = run_in_fresh_process(script, [json.dumps(jobs), str(helper)], tmp_path, timeout=300)
        assert result.returncode == 0 and "REMOTE-OK" in result.stdout, result.stderr[-4000:]

    def test_auto_classes_round_trip(self, tmp_path: Path) -> None:
        config = self.get_config()
        inputs = self.get_inputs(config, 2)
        for model_class in self.model_classes:
            auto_class = getattr(transformers, model_class._auto_class)
            assert type(auto_class.from_config(config)) is model_class
            model = self.make_model(model_class, config)
            folder = tmp_path / model_class.__name__
            model.save_pretrained(folder)
            assert type(AutoConfig.from_pretrained(folder)) is type(config)
            loaded = auto_class.from_pretrained(folder).eval()
            assert type(loaded) is model_class
            assert_outputs_close(self.run_model(loaded, inputs), self.run_model(model, inputs), atol=0, rtol=0)

    def test_return_dict_false(self) -> None:
        config = self.get_config()
        inputs = self.get_inputs(config, 2)
        for model_class in self.model_classes:
            model = self.make_model(model_class, config)
            as_dict = self.run_model(model, inputs, output_hidden_states=True)
            as_tuple = self.run_model(model, inputs, output_hidden_states=True, return_dict=False)
            assert isinstance(as_tuple, tuple)
            assert_outputs_close(as_tuple, as_dict.to_tuple(), atol=0, rtol=0)

    def test_gradient_checkpointing(self) -> None:
        config = self.get_config()
        inputs = self.get_inputs(config, 2)
        for model_class in self.model_classes:
            if not model_class.supports_gradient_checkpointing:
                continue
            model = self.make_model(model_class, config).train()
            labels = self.get_labels(config, 2) if accepts_labels(model_class) else None
            results = []
            for checkpointing in (False, True):
                if checkpointing:
                    model.activation_checkpointing_enable()
                    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
                    assert layers and all(layer.gradient_checkpointing for layer in layers)
                model.zero_grad()
                torch.manual_seed(1)
                if labels is not None:
                    loss = model(**inputs, labels=labels).loss
                else:
                    output = model(**inputs)
                    loss = sum(
                        value.float().pow(2).mean()
                        for value in flatten_output(output).values()
                        if value.is_floating_point()
                    )
                loss.backward()
                grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
                results.append((loss.detach(), grads))
            (loss_plain, grads_plain), (loss_ckpt, grads_ckpt) = results
            torch.testing.assert_close(loss_ckpt, loss_plain, atol=self.atol, rtol=1e-5)
            assert grads_plain.keys() == grads_ckpt.keys() and grads_plain
            for name, grad in grads_plain.items():
                torch.testing.assert_close(grads_ckpt[name], grad, atol=self.atol, rtol=1e-4, msg=name)

    def test_loss_under_gradient_accumulation(self, tmp_path: Path) -> None:
        config = self.get_config()
        inputs = self.get_inputs(config, 4)
        labels = self.get_labels(config, 4)
        dataset = [{**{k: v[i] for k, v in inputs.items()}, "labels": labels[i]} for i in range(4)]
        for model_class in self.model_classes:
            if not accepts_labels(model_class):
                continue
            model = self.make_model(model_class, config)
            # reference: the mean loss over the two micro-batches, computed with the model in train mode
            reference_model = copy.deepcopy(model).train()
            with torch.no_grad():
                micro = [
                    reference_model(**{k: v[s] for k, v in inputs.items()}, labels=labels[s]).loss
                    for s in (slice(0, 2), slice(2, 4))
                ]
                full = reference_model(**inputs, labels=labels).loss
            accumulated = self.trainer_loss(model, dataset, 2, 2, tmp_path / f"{model_class.__name__}-2x2")
            single = self.trainer_loss(model, dataset, 4, 1, tmp_path / f"{model_class.__name__}-4x1")
            assert accumulated == pytest.approx(float(sum(micro) / 2), rel=1e-5, abs=1e-6)
            assert single == pytest.approx(float(full), rel=1e-5, abs=1e-6)
            if self.loss_independent_of_batch_composition:
                assert accumulated == pytest.approx(single, rel=1e-5, abs=1e-6)

    def test_hidden_states_output(self) -> None:
        for via_config in (False, True):
            config = self.get_config(output_hidden_states=True) if via_config else self.get_config()
            inputs = self.get_inputs(config, 2)
            expected = [tuple(shape) for shape in self.expected_hidden_state_shapes(config, 2)]
            for model_class in self.model_classes:
                model = self.make_model(model_class, config)
                kwargs = {} if via_config else {"output_hidden_states": True}
                hidden_states = self.run_model(model, inputs, **kwargs).hidden_states
                assert hidden_states is not None and len(hidden_states) == len(expected)
                assert [tuple(h.shape) for h in hidden_states] == expected
                if not via_config:
                    assert self.run_model(model, inputs).hidden_states is None

    def test_batch_size_independence(self) -> None:
        config = self.get_config()
        inputs = self.get_inputs(config, 3)
        for model_class in self.model_classes:
            model = self.make_model(model_class, config)
            self.move_buffers(model, inputs)
            batched = flatten_output(self.run_model(model, inputs, output_hidden_states=True))
            for index in range(3):
                single = flatten_output(
                    self.run_model(
                        model, {k: v[index : index + 1] for k, v in inputs.items()}, output_hidden_states=True
                    )
                )
                for key, value in single.items():
                    if value.ndim == 0:
                        continue
                    if key in self.batch_coupled_outputs:
                        torch.testing.assert_close(value[0, 0], batched[key][index, index], atol=self.atol, rtol=1e-4)
                        continue
                    torch.testing.assert_close(
                        value[0], batched[key][index], atol=self.atol, rtol=1e-4, msg=lambda m, key=key: f"{key}: {m}"
                    )

    def test_determinism(self) -> None:
        config = self.get_config()
        inputs = self.get_inputs(config, 2)
        for model_class in self.model_classes:
            first, second = self.make_model(model_class, config, seed=3), self.make_model(model_class, config, seed=3)
            other = self.make_model(model_class, config, seed=4)
            state, state_again, state_other = first.state_dict(), second.state_dict(), other.state_dict()
            assert all(torch.equal(state[k], state_again[k]) for k in state)
            assert any(not torch.equal(state[k], state_other[k]) for k in state if state[k].is_floating_point())
            assert_outputs_close(self.run_model(first, inputs), self.run_model(second, inputs), atol=0, rtol=0)
            assert_outputs_close(self.run_model(first, inputs), self.run_model(first, inputs), atol=0, rtol=0)

    def test_modalities_ablations(self) -> None:
        for modality in self.modality_options:
            config = self.get_config(modalities=modality)
            inputs = self.get_inputs(config, 2)
            needed = self.modality_input_names.get(modality)
            for model_class in self.model_classes:
                model = self.make_model(model_class, config)
                full = self.run_model(model, inputs)
                for key, value in flatten_output(full).items():
                    if value.is_floating_point():
                        assert torch.isfinite(value).all(), f"{modality} {key} not finite"
                if needed is not None:  # single modality: the other inputs are not needed and change nothing
                    reduced = {k: v for k, v in inputs.items() if k in needed}
                    assert_outputs_close(self.run_model(model, reduced), full, atol=0, rtol=0, what=modality)

    def test_attention_outputs(self) -> None:
        if not self.has_attentions:
            pytest.skip("family has no attention layers")
        config = self.get_config()
        inputs = self.get_inputs(config, 2)
        expected = [tuple(shape) for shape in self.expected_attention_shapes(config, 2)]
        for model_class in self.model_classes:
            torch.manual_seed(0)
            model = model_class._from_config(config, attn_implementation="eager").eval()
            attentions = self.run_model(model, inputs, output_attentions=True).attentions
            assert attentions is not None and [tuple(a.shape) for a in attentions] == expected
            assert self.run_model(model, inputs).attentions is None

    def test_eager_sdpa_equivalence(self) -> None:
        if not self.supports_sdpa:
            pytest.skip("family has no sdpa attention")
        config = self.get_config()
        inputs = self.get_inputs(config, 2)
        for model_class in self.model_classes:
            outputs = {}
            for implementation in ("eager", "sdpa"):
                torch.manual_seed(0)
                model = model_class._from_config(config, attn_implementation=implementation).eval()
                assert model.config._attn_implementation == implementation
                outputs[implementation] = self.run_model(model, inputs)
            assert_outputs_close(outputs["sdpa"], outputs["eager"], atol=1e-5, rtol=1e-4, what=model_class.__name__)
