"""A fifteenth round of hostile inputs: OpenVINO IRs (.xml + .bin) given to `run` and `verify --patched`, which
OpenVINO's own reader was the only one to judge. Found: rt_info nested 100,000 deep killed the process (SIGSEGV:
the reader recurses); names or rt_info that are not UTF-8 were an internal error (UnicodeDecodeError) once read; an
IR `version` OpenVINO does not read was handed to every frontend (TensorFlow's logged four lines to stderr); a Loop
with a constant trip count of 2^62, or of -1 with a condition its body keeps true, compiled for ever; If bodies
nested 12 deep took minutes; an i32 or i64 Divide or Mod of constants by -1 killed the process (SIGFPE: OpenVINO
folds INT_MIN / -1 with idiv), as did a divisor of -1 computed from the input's static shape; an IR with no Result
went to `verify` and "failed" (exit 1), one whose input has no rank was an internal IndexError in `verify`; an .xml
of 300 MB took 1 GB; a .bin of another model of the same size ran in silence; and `verify --precision int8
--patched` read the IR's rt_info before any check (SIGSEGV, internal errors). `irchecks.check_ir` now reads the
.xml with expat first (UTF-8, no DTD, at most 100 levels, 5,000,000 elements, 256 MiB) and refuses each of those
from static facts, under the limits `modelio` holds ONNX models to; `convert` records the SHA-256 of the .bin in the
IR (and its size) and a .bin that does not match is refused. Each is one line and exit 2, and no input changes.

Cases that crash or hang OpenVINO run the CLI in a child process, so that the code before the fix fails them
instead of taking the test session down."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from clikit import invoke, one_line_exit_2

from conftest import RECIPES, ROOT

CROP = RECIPES / "hrnet_coco_pose.yaml"
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"
DIMS = "<dim>1</dim><dim>8</dim>"


def digest(*paths) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def small_ir(folder, *, version: str = "11", rt_info: str = "", name: str = "y", results: int = 1,
             parameter_shape: str = "1,8") -> object:
    """x f32[1,8] → ReLU → `results` Results (the first named `name`), as OpenVINO writes an IR; no weights."""
    layers = [f'<layer id="0" name="x" type="Parameter" version="opset1"><data shape="{parameter_shape}" '
              f'element_type="f32" /><output><port id="0" precision="FP32" names="x">{DIMS}</port></output></layer>',
              f'<layer id="1" name="relu" type="ReLU" version="opset1"><input><port id="0" precision="FP32">{DIMS}'
              f'</port></input><output><port id="1" precision="FP32" names="{name}">{DIMS}</port></output></layer>']
    layers += [f'<layer id="{2 + i}" name="out{i}" type="Result" version="opset1"><input><port id="0" '
               f'precision="FP32">{DIMS}</port></input></layer>' for i in range(results)]
    edges = ['<edge from-layer="0" from-port="0" to-layer="1" to-port="0" />']
    edges += [f'<edge from-layer="1" from-port="1" to-layer="{2 + i}" to-port="0" />' for i in range(results)]
    xml = folder / "m.xml"
    xml.write_text(f'<?xml version="1.0"?>\n<net name="t" version="{version}">\n<layers>\n' + "\n".join(layers) +
                   "\n</layers>\n<edges>\n" + "\n".join(edges) + f"\n</edges>\n<rt_info>{rt_info}</rt_info>\n</net>\n")
    (folder / "m.bin").write_bytes(b"")
    return xml


def saved_ir(folder, build) -> object:
    """An IR written by OpenVINO of the model `build(ops, constant)` returns (a tiny one, in no time)."""
    import openvino as ov
    import openvino.opset13 as ops

    def constant(value, dtype=np.int64):
        return ops.constant(np.array(value, dtype=dtype))

    model = build(ops, constant)
    ov.save_model(model, str(folder / "m.xml"), compress_to_fp16=False)
    return folder / "m.xml"


def child(*args):
    """`graphsurgery ARGS...` in a child process: what crashes or hangs OpenVINO must not take pytest with it."""
    return subprocess.run([sys.executable, "-m", "graphsurgery", *map(str, args)], capture_output=True, text=True,
                          timeout=90)


def refused(done, *needles):
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def run_refuses(xml, tmp_path, *needles):
    before = digest(xml, xml.with_suffix(".bin"))
    refused(child("run", xml, PHOTO, "-o", tmp_path / "out"), str(xml), *needles)
    assert digest(xml, xml.with_suffix(".bin")) == before and not (tmp_path / "out").exists()


# --- the .xml as XML ----------------------------------------------------------------------------------------------

def test_rt_info_nested_deep_is_refused_before_openvino_recurses(tmp_path):
    deep = "<graphsurgery>" + "<a>" * 100_000 + "</a>" * 100_000 + "</graphsurgery>"
    xml = small_ir(tmp_path, rt_info=deep)  # was SIGSEGV
    run_refuses(xml, tmp_path, "nests elements more than 100 deep")


def test_verify_int8_checks_the_ir_before_it_reads_its_rt_info(tmp_path, plain):
    """`verify --precision int8 --patched` read the IR's rt_info (is it int8?) before anything checked it: SIGSEGV
    for rt_info nested deep, an internal error for an IR version or a Const OpenVINO refuses."""
    xml = small_ir(tmp_path, rt_info="<graphsurgery>" + "<a>" * 100_000 + "</a>" * 100_000 + "</graphsurgery>")
    refused(child("verify", CROP, plain, "--patched", xml, "--backends", "openvino", "--precision", "int8", "--random",
                  2), str(xml), "nests elements more than 100 deep")
    xml = small_ir(tmp_path)
    xml.write_text(xml.read_text().replace('type="ReLU" version="opset1"', 'type="ReLU" version="opset999"'))
    one_line_exit_2(invoke("verify", CROP, plain, "--patched", xml, "--backends", "openvino", "--precision", "int8",
                           "--random", 2), str(xml), "OpenVINO cannot read the IR")


@pytest.mark.parametrize("where", ["an output name", "the rt_info"])
def test_text_that_is_not_utf8_is_the_irs_fault(tmp_path, where):
    xml = small_ir(tmp_path, name="NAME", rt_info='<graphsurgery><weights value="RT" /></graphsurgery>')
    text = xml.read_bytes()
    xml.write_bytes(text.replace(b"NAME", b"ke\xff\xfey") if where == "an output name"
                    else text.replace(b'value="RT"', b'value="FP\xff32"'))
    before = digest(xml)
    one_line_exit_2(invoke("run", xml, PHOTO, "-o", tmp_path / "out"), str(xml), "not well-formed UTF-8 XML")
    assert digest(xml) == before  # was an internal error (UnicodeDecodeError)
    # OpenVINO writes a control character of a name as `&#27;` (XML 1.1, which expat refuses): that IR is read, and
    # the name shown escaped
    xml = small_ir(tmp_path, name="y&#27;[31mred&#7;")
    result = invoke("run", xml, PHOTO, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "not a patched pose model" in result.output, result.output
    assert "\x1b" not in result.output and "\\x1b[31mred" in result.output


def test_an_ir_version_openvino_does_not_read_is_refused_before_every_frontend_tries_it(tmp_path):
    xml = small_ir(tmp_path, version="99")  # TensorFlow's frontend logged four lines to stderr
    one_line_exit_2(invoke("run", xml, PHOTO, "-o", tmp_path / "out"), str(xml), "IR version '99'")


def test_an_xml_over_256_mib_is_refused_before_it_is_read(tmp_path):
    xml = small_ir(tmp_path)
    with open(xml, "r+b") as stream:  # sparse: 300 MB of NULs after the IR (pugixml took 1 GB for 300 MB)
        stream.truncate(300 * 2**20)
    one_line_exit_2(invoke("run", xml, PHOTO, "-o", tmp_path / "out"), str(xml), "at most 256 MiB")


def test_an_ir_without_outputs_is_refused(tmp_path, plain):
    xml = small_ir(tmp_path, results=0)  # `verify` "failed" it (exit 1)
    one_line_exit_2(invoke("verify", CROP, plain, "--patched", xml, "--backends", "openvino", "--random", 2),
                    str(xml), "no outputs")


def test_an_image_input_without_rank_is_refused_by_verify(tmp_path, plain):
    xml = saved_ir(tmp_path, lambda ops, constant: _dynamic_rank(ops))
    one_line_exit_2(invoke("verify", CROP, plain, "--patched", xml, "--backends", "openvino", "--random", 2),
                    str(xml), "has no known rank")  # was an internal IndexError


def _dynamic_rank(ops):
    import openvino as ov

    image = ops.parameter(ov.PartialShape.dynamic(), np.uint8, name="input")
    return ov.Model([ops.result(ops.convert(image, "f32"))], [image])


# --- work that would not end -------------------------------------------------------------------------------------

def _loop(trips: int):
    def build(ops, constant):
        import openvino as ov

        x = ops.parameter([1, 8], np.float32, name="x")
        inner = ops.parameter([1], np.float32, name="inner")
        body = ov.Model([ops.result(constant(True, bool)), ops.result(ops.add(inner, constant([1.0], np.float32)))],
                        [inner])
        loop = ops.loop(constant(trips), constant(True, bool))
        loop.set_function(body)
        loop.set_special_body_ports([-1, 0])
        loop.set_merged_input(inner, constant([0.0], np.float32).output(0), body.get_results()[1].output(0))
        return ov.Model([ops.result(ops.relu(x)), ops.result(loop.get_iter_value(body.get_results()[1].output(0)))],
                        [x])
    return build


@pytest.mark.parametrize("trips, needle", [(2**62, "constant trip count of 4,611,686,018,427,387,904"),
                                           (-1, "no trip count and a condition its body never turns false")])
def test_a_loop_that_would_not_end_is_refused(tmp_path, trips, needle):
    run_refuses(saved_ir(tmp_path, _loop(trips)), tmp_path, needle)  # each compiled for ever


def test_bodies_nested_deeper_than_onnx_models_may_are_refused(tmp_path):
    def build(ops, constant):
        import openvino as ov

        def nested(depth: int):
            inner = ops.parameter([1], np.float32, name=f"p{depth}")
            if depth == 0:
                return ov.Model([ops.result(ops.relu(inner))], [inner])
            then, other = nested(depth - 1), ov.Model([ops.result(ops.relu(p := ops.parameter([1], np.float32)))],
                                                      [p])
            branch = ops.if_op(constant(True, bool))
            branch.set_then_body(then)
            branch.set_else_body(other)
            branch.set_input(inner.output(0), then.get_parameters()[0], other.get_parameters()[0])
            return ov.Model([ops.result(branch.set_output(then.get_results()[0], other.get_results()[0]))], [inner])

        x = ops.parameter([1], np.float32, name="x")
        top = nested(11)
        branch = ops.if_op(ops.greater(x, constant([0.0], np.float32)))
        branch.set_then_body(top)
        branch.set_else_body(top.clone())
        branch.set_input(x.output(0), top.get_parameters()[0], branch.get_else_body().get_parameters()[0])
        return ov.Model([ops.result(branch.set_output(top.get_results()[0], branch.get_else_body().get_results()[0]))],
                        [x])

    run_refuses(saved_ir(tmp_path, build), tmp_path, "nests bodies (If, Loop, TensorIterator) more than 10 deep")


@pytest.mark.parametrize("case", ["Divide by a constant -1", "Mod by a constant -1", "Divide by 0 - 1",
                                  "Divide by a static shape's 0 - 1"])
def test_integer_division_by_minus_one_that_openvino_folds_is_refused(tmp_path, case):
    def build(ops, constant):
        import openvino as ov

        x = ops.parameter([1, 8], np.float32, name="x")
        smallest = constant([-2**31], np.int32)
        if case == "Divide by a constant -1":
            quotient = ops.divide(smallest, constant([-1], np.int32))
        elif case == "Mod by a constant -1":
            quotient = ops.mod(smallest, constant([-1], np.int32))
        elif case == "Divide by 0 - 1":
            quotient = ops.divide(smallest, ops.subtract(constant([0], np.int32), constant([1], np.int32)))
        else:
            shape = ops.shape_of(x, "i64")
            quotient = ops.divide(constant([-2**63]), ops.subtract(ops.multiply(shape, constant([0])), constant([1])))
        return ov.Model([ops.result(ops.relu(x)), ops.result(quotient)], [x])

    run_refuses(saved_ir(tmp_path, build), tmp_path, "kills the process (SIGFPE)")  # each died of SIGFPE


def test_only_a_division_openvino_folds_is_refused(tmp_path):
    """INT_MIN / -1 computed at run time (the divisor from the input's values) is divided by OpenVINO's kernels, not
    folded: that IR is read (and refused only as no pose model). The same divisor of constants alone is refused."""
    for divisor, said in (("constants", "kills the process (SIGFPE)"), ("the input", "not a patched pose model")):
        def build(ops, constant, divisor=divisor):
            import openvino as ov

            x = ops.parameter([1, 8], np.int32, name="x")
            values = x if divisor == "the input" else constant([[5] * 8], np.int32)
            quotient = ops.divide(constant([-2**31], np.int32),
                                  ops.subtract(ops.multiply(values, constant([0], np.int32)), constant([1], np.int32)))
            return ov.Model([ops.result(quotient)], [x])

        folder = tmp_path / divisor
        folder.mkdir()
        result = invoke("run", saved_ir(folder, build), PHOTO, "-o", folder / "out")
        assert result.exit_code == 2 and said in result.output, result.output


# --- the .bin ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ir(patched, tmp_path_factory):
    xml = tmp_path_factory.mktemp("ir15") / "m.xml"
    assert invoke("convert", patched, "-o", xml).exit_code == 0
    return xml


def test_convert_records_the_weights_digest_and_a_swapped_bin_is_refused(ir, tmp_path):
    import shutil

    recorded = hashlib.sha256(ir.with_suffix(".bin").read_bytes()).hexdigest()
    assert f'<weights_sha256 value="{recorded}" />' in ir.read_text()
    assert f'<weights_bytes value="{ir.with_suffix(".bin").stat().st_size}" />' in ir.read_text()
    shutil.copy(ir, tmp_path / "m.xml")
    weights = bytearray(ir.with_suffix(".bin").read_bytes())
    weights[-64:] = bytes(reversed(weights[-64:]))  # another model's weights, of the same size
    (tmp_path / "m.bin").write_bytes(bytes(weights))
    xml = tmp_path / "m.xml"
    before = digest(xml, tmp_path / "m.bin")
    one_line_exit_2(invoke("run", xml, PHOTO, "-o", tmp_path / "out"), str(xml),
                    "m.bin is not the weights file this .xml was converted with")
    assert digest(xml, tmp_path / "m.bin") == before and not (tmp_path / "out").exists()
    shutil.copy(ir.with_suffix(".bin"), tmp_path / "m.bin")
    with open(tmp_path / "m.bin", "r+b") as stream:  # its own, grown sparse to 100 GB: refused without hashing it
        stream.truncate(100 * 2**30)
    one_line_exit_2(invoke("run", xml, PHOTO, "-o", tmp_path / "out"), str(xml), "it holds 107,374,182,400 bytes")
    shutil.copy(ir.with_suffix(".bin"), tmp_path / "m.bin")  # its own .bin: read as before
    assert invoke("run", xml, PHOTO, "-o", tmp_path / "out").exit_code == 0
