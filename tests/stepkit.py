"""A small harness for step tests: build a model that is nothing but one chain of steps, run it, run the twins.

The model's graph input named "output" stands for the model output the steps read (plus any extra inputs the
steps declare); the emitted nodes come from the steps' own `build` through an `Emitter`, as in the splice.
Sessions are cached per (steps, opset, input shape) so parametrized tests do not rebuild them.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from graphsurgery.emit import Emitter
from graphsurgery.model import ModelFacts
from graphsurgery.steps.base import InputStep, OutputStep, TensorSpec

#: The opsets every step is tested at: the oldest supported, the common ones, and the newest onnx knows.
OPSETS = (9, 11, 13, 17, 18, 28)
NEWEST = onnx.defs.onnx_opset_version()


def build_model(steps: Sequence[OutputStep], source: tuple[type, tuple], opset: int, results: Sequence[str],
                facts: dict | None = None) -> onnx.ModelProto:
    """A checked model: graph input "output" (dtype, shape) → steps → graph outputs named after `results`.

    `facts` are the model facts the splice passes to the steps, by name (input_size, output_producer).
    """
    dtype, shape = source
    graph = gs.Graph(opset=opset)
    output = gs.Variable("output", dtype=np.dtype(dtype), shape=list(shape))
    graph.inputs.append(output)
    env: dict = {"output": output}
    taken: set[str] = {"output"}
    batch = shape[0]
    for step in steps:
        for extra in step.extra_inputs(batch):
            if extra.name not in env:
                var = gs.Variable(extra.name, dtype=np.dtype(extra.dtype), shape=list(extra.shape))
                graph.inputs.append(var)
                env[extra.name] = var
                taken.add(extra.name)
        em = Emitter(graph, opset, "graphsurgery/post", taken=taken).scoped(step.step_name)
        env.update(step.build(em, env, model_facts(facts)))
    outputs = []
    for name in results:
        var = env[name]
        identity = gs.Variable(result_name(name), dtype=var.dtype)
        graph.nodes.append(gs.Node("Identity", name=f"result/{name}", inputs=[var], outputs=[identity]))
        outputs.append(identity)
    graph.outputs = outputs
    model = gs.export_onnx(graph.cleanup().toposort(), do_type_check=True)
    del model.opset_import[:]
    model.opset_import.append(onnx.helper.make_opsetid("", opset))
    model.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import))
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def build_input_model(steps: Sequence[InputStep], spec: TensorSpec, opset: int) -> onnx.ModelProto:
    """A checked model that is nothing but input `steps`: graph input "image" (as `spec` describes it, plus the
    extra inputs the steps declare) → steps → graph output "result"."""
    graph = gs.Graph(opset=opset)
    x = gs.Variable("image", dtype=np.dtype(spec.dtype), shape=list(spec.shape))
    graph.inputs.append(x)
    extras, taken = {}, {"image"}
    for step in steps:
        for extra in step.extra_inputs():
            extras.setdefault(extra.name, gs.Variable(extra.name, dtype=np.dtype(extra.dtype), shape=list(extra.shape)))
            if extras[extra.name] not in graph.inputs:
                graph.inputs.append(extras[extra.name])
        em = Emitter(graph, opset, "graphsurgery/pre", taken).scoped(step.step_name)
        after = step.spec_after(spec)
        x = step.build(em, x, spec, **{e.name: extras[e.name] for e in step.extra_inputs()})
        spec = after
    result = gs.Variable("result", dtype=x.dtype, shape=x.shape)
    graph.nodes.append(gs.Node("Identity", name="result", inputs=[x], outputs=[result]))
    graph.outputs = [result]
    model = gs.export_onnx(graph.cleanup().toposort(), do_type_check=True)
    del model.opset_import[:]
    model.opset_import.append(onnx.helper.make_opsetid("", opset))
    model.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import))
    onnx.checker.check_model(model, full_check=True)
    return model


def result_name(name: str) -> str:
    """The graph output that carries result `name` ("output", which a step may rewrite, is taken by the input)."""
    return "output_result" if name == "output" else name


def model_facts(facts: dict | None) -> ModelFacts:
    """The facts a splice would pass, from the few a step test names (the rest: none)."""
    return ModelFacts(input_size=(facts or {}).get("input_size"), output_producer=(facts or {}).get("output_producer"),
                      output_name="output")


def op_types(model: onnx.ModelProto) -> list[str]:
    """The op types the steps emitted (the harness's result Identities left out), in graph order."""
    return [n.op_type for n in model.graph.node if not n.name.startswith("result/")]


def reference(steps: Sequence[OutputStep], feeds: dict[str, np.ndarray], results: Sequence[str],
              facts: dict | None = None) -> list[np.ndarray]:
    """The steps' numpy twins, chained the way `twins.postprocess` chains them."""
    env: dict = dict(feeds)
    for step in steps:
        env.update(step.reference(env, model_facts(facts)))
    return [env[name] for name in results]


class Chain:
    """One chain of steps at one opset: the checked model plus lazily created ORT / OpenVINO sessions."""

    def __init__(self, steps, source, opset, results, facts=None):
        self.steps, self.results, self.facts = tuple(steps), tuple(results), facts
        self.model = build_model(steps, source, opset, results, facts)
        self._ort = None
        self._ov = None

    def ort(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._ort is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 2
            self._ort = ort.InferenceSession(self.model.SerializeToString(), options,
                                             providers=["CPUExecutionProvider"])
        return self._ort.run([result_name(n) for n in self.results], feeds)

    def openvino(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._ov is None:
            import openvino as ov

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.onnx"
                onnx.save(self.model, path)
                self._ov = ov.Core().compile_model(str(path), "CPU",
                                                   {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2})
        request = self._ov.create_infer_request()
        request.infer(feeds)
        return [request.get_tensor(result_name(name)).data.copy() for name in self.results]

    def twin(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return reference(self.steps, feeds, self.results, self.facts)


@functools.cache
def chain(steps: tuple[OutputStep, ...], source: tuple[type, tuple], opset: int, results: tuple[str, ...],
          facts: tuple = ()) -> Chain:
    """A cached `Chain` (steps are frozen pydantic models, hence hashable; facts as a tuple of pairs)."""
    return Chain(steps, source, opset, results, dict(facts) or None)
