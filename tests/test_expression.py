"""Band math (pipeline.expression): results against numpy written by hand on the same arrays, the
lazy form against the eager one on real bands with uneven chunks, and every kind of refusal."""

from __future__ import annotations

import ast
import pickle

import dask
import dask.array as da
import numpy as np
import pytest
import rasterio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import RGBN, data_path
from pipeline.errors import ConfigError
from pipeline.expression import (
    FUNCTIONS, INDICES, LANDSAT_OLI_BANDS, LANDSAT_TM_ETM_BANDS, MAX_DEPTH, MAX_LENGTH, Expression,
    check_band_names, index, parse, result_dtype,
)

# any numpy RuntimeWarning (divide by zero, invalid value, overflow) fails the test
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

BANDS = {"blue", "green", "red", "nir", "swir1", "swir2"}


def by_hand(fn, arrays: dict[str, np.ndarray], dtype) -> np.ndarray:
    """``fn`` on the arrays cast to ``dtype``, non-finite results as NaN: the reference."""
    cast = {k: v.astype(dtype) for k, v in arrays.items()}
    with np.errstate(all="ignore"):
        out = np.asarray(fn(**cast), dtype=dtype)
    return np.where(np.isfinite(out), out, dtype.type(np.nan))


def reflectance(rng, shape=(37, 53), dtype=np.float32) -> dict[str, np.ndarray]:
    """Landsat-like surface reflectance (DN * 0.0000275 - 0.2) for every band, with pixels where
    the two bands of a normalized difference are both 0 and where nir + red = -0.5 (SAVI's
    denominator), so that every preset divides by zero somewhere."""
    dn = {b: rng.integers(7273, 43636, shape) for b in sorted(BANDS)}
    out = {b: (v * 0.0000275 - 0.2).astype(dtype) for b, v in dn.items()}
    for b in BANDS:
        out[b][0, :5] = 0.0
        out[b][1, :3] = -0.25
    return out


# ------------------------------------------------------------------------------ presets
PRESET_BY_HAND = {
    "ndvi": lambda nir, red, **_: (nir - red) / (nir + red),
    "ndwi": lambda green, nir, **_: (green - nir) / (green + nir),
    "mndwi": lambda green, swir1, **_: (green - swir1) / (green + swir1),
    "nbr": lambda nir, swir2, **_: (nir - swir2) / (nir + swir2),
    "ndbi": lambda swir1, nir, **_: (swir1 - nir) / (swir1 + nir),
    "savi": lambda nir, red, **_: (1 + 0.5) * (nir - red) / (nir + red + 0.5),
}


@pytest.mark.parametrize("name", sorted(PRESET_BY_HAND))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_presets_equal_numpy_by_hand(name, dtype):
    arrays = reflectance(np.random.default_rng(len(name)), dtype=dtype)
    expr = index(name)
    assert expr.names == set(INDICES[name].bands)
    got = expr.evaluate(arrays)
    want = by_hand(PRESET_BY_HAND[name], arrays, np.dtype(dtype))
    assert got.dtype == dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    nan = np.isnan(got)
    assert nan[0, :5].all() if name != "savi" else nan[1, :3].all()  # the divisions by zero
    assert nan.sum() <= 5 and np.abs(got[~nan]).max() > 0.01


def test_presets_are_the_published_formulas():
    """The preset table as data: bands used, and a value checked against the formula by hand."""
    assert set(INDICES) == {"ndvi", "ndwi", "mndwi", "nbr", "ndbi", "savi"}
    for name, preset in INDICES.items():
        assert parse(preset.expression, set(preset.bands)).names == set(preset.bands), name
        assert preset.description and preset.reference
    one = {"blue": 0.05, "green": 0.08, "red": 0.04, "nir": 0.4, "swir1": 0.2, "swir2": 0.1}
    arrays = {k: np.array([[v]], np.float64) for k, v in one.items()}
    expected = {"ndvi": 0.36 / 0.44, "ndwi": -0.32 / 0.48, "mndwi": -0.12 / 0.28, "nbr": 0.3 / 0.5,
                "ndbi": -0.2 / 0.6, "savi": 1.5 * 0.36 / 0.94}
    for name, value in expected.items():
        assert index(name).evaluate(arrays)[0, 0] == pytest.approx(value, rel=1e-12), name
    assert LANDSAT_OLI_BANDS == {"coastal": "B1", "blue": "B2", "green": "B3", "red": "B4", "nir": "B5",
                                 "swir1": "B6", "swir2": "B7"}
    assert LANDSAT_TM_ETM_BANDS["nir"] == "B4" and LANDSAT_TM_ETM_BANDS["swir2"] == "B7"
    for preset in INDICES.values():
        assert set(preset.bands) <= set(LANDSAT_OLI_BANDS) & set(LANDSAT_TM_ETM_BANDS)


def test_index_names():
    assert index("NDVI ") == index("ndvi")
    with pytest.raises(ConfigError) as err:
        index("ndvii")
    assert str(err.value) == "index: unknown index 'ndvii' (did you mean 'ndvi'?); one of mndwi, nbr, ndbi, ndvi, ndwi, savi"
    with pytest.raises(ConfigError, match=r"^index: unknown index 'evi'; one of mndwi, "):
        index("evi")
    assert err.value.exit_code == 2


# ------------------------------------------------------------------------------ own expressions
OWN = [
    ("nir / red", lambda nir, red: nir / red),
    ("sqrt(nir - red)", lambda nir, red: np.sqrt(nir - red)),
    ("log(nir) + log10(red)", lambda nir, red: np.log(nir) + np.log10(red)),
    ("exp(nir / 1000)", lambda nir, red: np.exp(nir / 1000)),
    ("abs(red - nir) ** 0.5 % 7", lambda nir, red: np.abs(red - nir) ** 0.5 % 7),
    ("(red - nir) % 7 + nir % -3", lambda nir, red: (red - nir) % 7 + nir % -3),  # Python's sign rule
    ("clip(nir, 100, 2000) - minimum(nir, red) + maximum(nir, red)",
     lambda nir, red: np.minimum(np.maximum(nir, 100), 2000) - np.minimum(nir, red) + np.maximum(nir, red)),
    ("where(nir > red, nir - red, -1)", lambda nir, red: np.where(nir > red, nir - red, -1)),
    ("where(nir >= 1000 and red < 500 or not nir, 1, 2)",
     lambda nir, red: np.where(((nir >= 1000) & (red < 500)) | (nir == 0), 1, 2)),
    ("-nir + +red * 2 - 3 ** 2", lambda nir, red: -nir + red * 2 - 9),
    ("0 < nir / red <= 1",  # a comparison with nodata (x/0) is nodata
     lambda nir, red: np.where(np.isfinite(nir / red), (0 < nir / red) & (nir / red <= 1), np.nan)),
    ("(nir > red) + (nir > 500) + (red != 0) * 10", lambda nir, red: (nir > red) * 1.0 + (nir > 500) + (red != 0) * 10),
    ("2.5 * (nir - red) / (nir + 6 * red - 7.5 * red + 1)",
     lambda nir, red: 2.5 * (nir - red) / (nir + 6 * red - 7.5 * red + 1)),
    ("nir", lambda nir, red: nir),
]


@pytest.mark.parametrize("text, fn", OWN, ids=[t for t, _ in OWN])
@pytest.mark.parametrize("dtype", ["uint16", "float32", "float64", "int32"])
def test_own_expressions_equal_numpy_by_hand(text, fn, dtype):
    rng = np.random.default_rng(7)
    nir = rng.integers(0, 30000, (41, 29)).astype(dtype)
    red = rng.integers(0, 3000, (41, 29)).astype(dtype)
    nir[:3, :3] = 0
    red[2:5, 2:5] = 0  # 0/0 and x/0
    arrays = {"nir": nir, "red": red}
    want_dtype = np.dtype(np.float64 if dtype in ("float64", "int32") else np.float32)
    got = parse(text, {"nir", "red"}).evaluate(arrays)
    assert got.dtype == want_dtype
    np.testing.assert_array_equal(got, by_hand(fn, arrays, want_dtype))
    if "/ red" in text or "log" in text:
        assert np.isnan(got[2:5, 2:5]).any()
    assert not np.isinf(got).any()


def test_not_finite_is_nodata_and_stays_nodata():
    """As QGIS: x/0 is nodata, and nodata propagates through later operations (1/(x/0) is not 0);
    where() only takes NaN from the branch it picks; comparisons with nodata are nodata."""
    nir = np.array([[4.0, 2.0, 0.0, -1.0]], np.float32)
    red = np.array([[2.0, 0.0, 0.0, 1.0]], np.float32)
    arrays = {"nir": nir, "red": red}
    ev = lambda t: parse(t, {"nir", "red"}).evaluate(arrays)  # noqa: E731
    nan = np.nan
    np.testing.assert_array_equal(ev("nir / red"), [[2, nan, nan, -1]])
    np.testing.assert_array_equal(ev("1 / (nir / red)"), [[0.5, nan, nan, -1]])
    np.testing.assert_array_equal(ev("(nir / red) * 0"), [[0, nan, nan, -0.0]])
    np.testing.assert_array_equal(ev("where(red == 0, -9, nir / red)"), [[2, -9, -9, -1]])
    np.testing.assert_array_equal(ev("where(nir / red > 1, 1, 0)"), [[1, nan, nan, 0]])
    np.testing.assert_array_equal(ev("nir / red > 1 or nir > 0"), [[1, nan, nan, 0]])
    np.testing.assert_array_equal(ev("not nir / red"), [[0, nan, nan, 0]])
    np.testing.assert_array_equal(ev("sqrt(nir) + log(nir + 2)"), [[2 + np.log(np.float32(6)), np.sqrt(np.float32(2)) + np.log(np.float32(4)), np.log(np.float32(2)), nan]])
    np.testing.assert_array_equal(ev("minimum(nir / red, 5)"), [[2, nan, nan, -1]])
    np.testing.assert_array_equal(ev("nir % red"), [[0, nan, nan, 0]])
    np.testing.assert_array_equal(ev("exp(nir * 100)"), [[nan, nan, 1, np.exp(np.float32(-100))]])  # float32 overflow
    np.testing.assert_array_equal(ev("0 ** -red + nir"), [[nan, 3, 1, nan]])  # 0**-2 is inf: nodata
    inf_in = {"nir": np.array([[np.inf, 1]], np.float64), "red": np.array([[1, -np.inf]], np.float64)}
    np.testing.assert_array_equal(parse("where(nir > 0, 1, red)", {"nir", "red"}).evaluate(inf_in), [[nan, 1]])


@pytest.mark.parametrize("dtypes, want", [
    (["uint8"], np.float32), (["uint16", "int16"], np.float32), (["float32", "bool"], np.float32),
    (["float16"], np.float32), (["int32"], np.float64), (["uint32"], np.float64), (["int64"], np.float64),
    (["uint16", "float64"], np.float64), ([], np.float32),
])
def test_result_dtype_rules(dtypes, want):
    assert result_dtype(dtypes) == want


def test_float32_and_float64_computation():
    """uint16 inputs compute in float32 (the result equals float32 numpy, not float64 numpy);
    int32 values above 2**24 keep their exact value in float64; a float64 band makes float64."""
    nir = np.array([[40001, 12345, 65535]], np.uint16)
    red = np.array([[3, 7, 1]], np.uint16)
    got = parse("nir / red + 0.1", {"nir", "red"}).evaluate({"nir": nir, "red": red})
    f32 = nir.astype(np.float32) / red.astype(np.float32) + np.float32(0.1)
    f64 = nir / red.astype(np.float64) + 0.1
    np.testing.assert_array_equal(got, f32)
    assert got.dtype == np.float32 and not np.array_equal(got.astype(np.float64), f64)
    big = np.array([[2**24 + 1, 2**31 - 1]], np.int32)
    got = parse("nir - 0", {"nir"}).evaluate({"nir": big})
    assert got.dtype == np.float64 and got.tolist() == [[2**24 + 1, 2**31 - 1]]
    mixed = parse("nir + red", {"nir", "red"}).evaluate({"nir": nir, "red": red.astype(np.float64)})
    assert mixed.dtype == np.float64
    forced = parse("nir / red", {"nir", "red"}).evaluate({"nir": nir, "red": red}, np.float64)
    np.testing.assert_array_equal(forced, nir / red.astype(np.float64))


def test_evaluate_leaves_inputs_alone_and_checks_them():
    nir = np.array([[1.0, np.inf], [3.0, 4.0]], np.float32)
    keep = nir.copy()
    out = parse("nir", {"nir", "red"}).evaluate({"nir": nir, "red": np.zeros((3, 3))})  # red unused
    assert not np.shares_memory(out, nir) and out.flags.writeable
    np.testing.assert_array_equal(out, [[1, np.nan], [3, 4]])
    np.testing.assert_array_equal(nir, keep)
    e = parse("nir + red", {"nir", "red"})
    with pytest.raises(ValueError, match="no array given for band"):
        e.evaluate({"nir": nir})
    with pytest.raises(ValueError, match="differ in shape"):
        e.evaluate({"nir": nir, "red": np.zeros((3, 3), np.float32)})
    with pytest.raises(ValueError, match="float32 or float64"):
        e.evaluate({"nir": nir, "red": nir}, np.int16)
    with pytest.raises(TypeError, match="not a numpy array"):
        e.evaluate({"nir": da.from_array(nir), "red": nir})
    with pytest.raises(ValueError, match="complex"):
        e.evaluate({"nir": nir.astype(np.complex64), "red": nir})


# ------------------------------------------------------------------------------ lazy form
def _rgbn_bands():
    with rasterio.open(data_path(RGBN)) as ds:
        return ds.read(4), ds.read(1)  # NIR, red (uint8, nodata 0)


def _forbid_compute(*args, **kwargs):
    raise AssertionError("something was computed while building the graph")


@pytest.mark.parametrize("text", ["(nir - red) / (nir + red)", "where(nir > 2 * red, sqrt(nir), log(red))",
                                  INDICES["savi"].expression])
def test_lazy_on_real_bands_with_uneven_chunks(text):
    nir, red = _rgbn_bands()
    expr = parse(text, {"nir", "red"})
    lazy_in = {"nir": da.from_array(nir, chunks=(50, 70)), "red": da.from_array(red, chunks=(50, 70))}
    with dask.config.set(scheduler=_forbid_compute):
        result = expr.lazy(lazy_in)
    assert result.dtype == np.float32 and result._meta.dtype == np.float32
    assert result.shape == nir.shape and result.chunks == ((50, 50, 50, 50, 12), (70, 70, 70, 66))
    assert len(result.dask.layers) == 3  # the two inputs and ONE map_blocks layer
    got = result.compute(scheduler="sync")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expr.evaluate({"nir": nir, "red": red}))
    if text.startswith("(nir - red)"):  # and numpy by hand; 0/0 where both bands are nodata 0
        want = by_hand(PRESET_BY_HAND["ndvi"], {"nir": nir, "red": red}, np.dtype(np.float32))
        np.testing.assert_array_equal(got, want)
        assert np.isnan(got).sum() == ((nir.astype(int) + red) == 0).sum() > 0


def test_lazy_reads_nothing_until_computed():
    """Chunks are read by compute, not by lazy(); the result is deterministic (same name twice)."""
    nir, red = _rgbn_bands()
    reads = []

    def read(block, block_info=None):
        reads.append(block_info[0]["chunk-location"])
        return block

    lazy_in = {"nir": da.from_array(nir, chunks=(50, 70)).map_blocks(read, dtype=nir.dtype),
               "red": da.from_array(red, chunks=(50, 70)).astype(np.float64)}
    expr = index("ndvi")
    result = expr.lazy(lazy_in)
    assert reads == [] and result.dtype == np.float64
    assert expr.lazy(lazy_in).name == result.name != index("savi").lazy(lazy_in).name
    got = result.compute(scheduler="sync")
    assert sorted(reads) == [(i, j) for i in range(5) for j in range(4)]
    np.testing.assert_array_equal(got, expr.evaluate({"nir": nir, "red": red.astype(np.float64)}))


def test_lazy_refuses_misaligned_inputs():
    nir, red = _rgbn_bands()
    expr = index("ndvi")
    with pytest.raises(ValueError, match=r"bands 'nir' and 'red' differ in chunks .*rechunk them"):
        expr.lazy({"nir": da.from_array(nir, chunks=(50, 70)), "red": da.from_array(red, chunks=(64, 64))})
    with pytest.raises(ValueError, match="differ in shape"):
        expr.lazy({"nir": da.from_array(nir, chunks=(50, 70)), "red": da.from_array(red[:100], chunks=(50, 70))})
    with pytest.raises(TypeError, match="not a dask array"):
        expr.lazy({"nir": da.from_array(nir), "red": red})


def test_expression_pickles_for_distributed_workers():
    expr = parse("where(nir > 0.5, clip(nir, 0, 1), -red)", {"nir", "red"})
    back = pickle.loads(pickle.dumps(expr))
    assert back == expr and str(back) == expr.text
    arrays = {"nir": np.linspace(0, 1, 12).reshape(3, 4), "red": np.ones((3, 4))}
    np.testing.assert_array_equal(back.evaluate(arrays), expr.evaluate(arrays))


# ------------------------------------------------------------------------------ refusals
def balanced(levels: int) -> str:
    """A balanced sum of 2**levels band terms: many nodes, few levels."""
    return "nir" if levels == 0 else f"({balanced(levels - 1)}+{balanced(levels - 1)})"


REFUSED = [
    ("__import__('os')", "unknown function '__import__'; allowed: abs, clip, exp, log, log10, maximum, minimum, sqrt, where"),
    ("nir.__class__", "attribute access (x.y) is not allowed"),
    ("().__class__", "attribute access (x.y) is not allowed"),
    ("nir.__class__.__base__.__subclasses__()", "attribute access (x.y) is not allowed"),
    ("eval('1')", "unknown function 'eval'"),
    ("open('x')", "unknown function 'open'"),
    ("exec('import os')", "unknown function 'exec'"),
    ("getattr(nir, 'x')", "unknown function 'getattr'"),
    ("nir[0]", "subscripts (x[i]) are not allowed"),
    ("lambda: 1", "lambda is not allowed"),
    ("(lambda: 1)()", "only the functions abs, clip"),
    ("[x for x in nir]", "comprehensions are not allowed"),
    ("sum(x for x in nir)", "unknown function 'sum'"),
    ("'str'", "strings are not allowed"),
    ("f'{nir}'", "strings are not allowed"),
    ("b'x'", "strings are not allowed"),
    ("nir if red else nir", "'a if c else b' is not allowed; use where(c, a, b)"),
    ("where(nir > 1, a=nir, b=red)", "keyword arguments are not allowed; call where(cond, a, b)"),
    ("sqrt(x=nir)", "keyword arguments are not allowed"),
    ("abs(*nir)", "starred arguments (*x) are not allowed"),
    ("nri + red", "unknown band 'nri' (did you mean 'nir'?)"),
    ("ndvi", "unknown band 'ndvi'"),
    ("__builtins__", "unknown band '__builtins__'"),
    ("abs", "function 'abs' must be called, e.g. abs(x)"),
    ("where(nir, red)", "where() takes 3 arguments, got 2: where(cond, a, b)"),
    ("sqrt(nir, red)", "sqrt() takes 1 argument, got 2"),
    ("clip(nir, 1, 0)", "clip(x, lo, hi) needs lo <= hi"),
    ("nir & red", "'&' is not allowed; use 'and'"),
    ("nir > 1 | red > 2", "'|' is not allowed; use 'or'"),
    ("~nir", "'~' is not allowed; use 'not'"),
    ("nir ^ 2", "'^' is not allowed; use '**'"),
    ("nir // red", "'//' is not allowed"),
    ("nir @ red", "'@' is not allowed"),
    ("nir is red", "'is' is not allowed"),
    ("nir in red", "'in' is not allowed"),
    ("(nir, red)", "tuples, lists, sets and dicts are not allowed"),
    ("{nir: 1}", "tuples, lists, sets and dicts are not allowed"),
    ("(x := nir)", "assignment (:=) is not allowed"),
    ("True * nir", "'True' is not allowed"),
    ("None", "'None' is not allowed"),
    ("nir * 1j", "complex number 1j is not allowed"),
    ("nir * 1e999", "number 1e999 is too large for a float"),
    ("nir * " + "9" * 400, "is too large"),
    ("1 + 2", "uses no band; use at least one of nir, red"),
    ("", "is empty"),
    ("nir +", "invalid syntax"),
    ("nir = 1", "invalid syntax"),
    ("import os", "invalid syntax"),
    ("nir\x00", "invalid syntax"),
    ("1if nir else 2", "invalid syntax"),  # a SyntaxWarning from Python's parser: refused, not printed
    ("(" * 200 + "nir" + ")" * 200, f"is nested too deeply (more than {MAX_DEPTH} levels of brackets)"),
    ("abs(" * 120 + "nir" + ")" * 120, "is nested too deeply"),
    ("-" * 1500 + "nir", f"is nested too deeply (more than {MAX_DEPTH} levels of operations)"),
    ("+".join(["nir"] * 150), "is nested too deeply"),
    ("+".join(["nir"] * 10_000), f"is 39999 characters long; at most {MAX_LENGTH} are allowed"),
    (balanced(8), "is too long (more than 500 operands and operators)"),  # 511 nodes, 9 levels
]


@pytest.mark.parametrize("text, message", REFUSED, ids=[t[:40] for t, _ in REFUSED])
@pytest.mark.filterwarnings("error")
def test_refusals_are_one_line_config_errors(text, message):
    with pytest.raises(ConfigError) as err:
        parse(text, {"nir", "red"})
    line = str(err.value)
    assert line.startswith("expression: ") and "\n" not in line and len(line) < 200, line
    assert message in line
    assert err.value.exit_code == 2


def test_unknown_band_lists_the_bands_without_a_close_match():
    with pytest.raises(ConfigError, match=r"^expression: unknown band 'qqq'; bands: nir, red$"):
        parse("qqq", {"nir", "red"})
    with pytest.raises(ConfigError, match=r"^expression: unknown band 'nir'; no bands are defined$"):
        parse("nir", set())


def test_band_names_must_be_usable_in_expressions():
    check_band_names(["nir", "red", "swir1", "B4", "sr_b5"])
    for bad in ["b-4", "4nir", "lambda", "_x", "", "nir red", "né"]:
        with pytest.raises(ConfigError, match=r"^bands: name .* cannot be used in an expression"):
            check_band_names([bad])


def test_names_are_the_bands_used():
    expr = parse("  where(nir > 0.2, nir, 0) \n", {"nir", "red", "swir1"})
    assert expr.names == {"nir"} and expr.text == "where(nir > 0.2, nir, 0)"
    assert parse(balanced(7), {"nir"}).names == {"nir"}  # 255 nodes: within the limit
    assert isinstance(expr, Expression)


# ------------------------------------------------------------------------------ properties
ALLOWED_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call, ast.Name,
                 ast.Constant, ast.Load, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.Mod, ast.UAdd,
                 ast.USub, ast.Not, ast.And, ast.Or, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)


def audit(text: str, names: set[str]) -> None:
    """An independent check that an accepted expression holds only allow-listed constructs."""
    tree = ast.parse(text.strip(), mode="eval")
    for node in ast.walk(tree):
        assert isinstance(node, ALLOWED_NODES), (text, node)
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS and not node.keywords
            assert len(node.args) == FUNCTIONS[node.func.id][0]
        elif isinstance(node, ast.Name) and not any(isinstance(p, ast.Call) and p.func is node for p in ast.walk(tree)):
            assert node.id in names, (text, node.id)
        elif isinstance(node, ast.Constant):
            assert type(node.value) in (int, float), (text, node.value)


TOKENS = ["nir", "red", "nri", "1", "0", "0.5", "2", "1e400", "+", "-", "*", "/", "**", "%", "(", ")", "(", ")",
          ",", "<", ">=", "==", "!=", "and", "or", "not", "where", "abs", "sqrt", "log", "log10", "exp", "clip",
          "minimum", "maximum", "__import__", "eval", "open", "os", ".", "__class__", "[", "]", "lambda", ":",
          "'s'", "if", "else", "for", "in", "=", "&", "|", "~", "{", "}", "@", "__builtins__", "exec", "getattr",
          "True", "None", "is", "yield", ":=", "*", "1j", "#", "\\", "\n", ";"]
SMALL = {"nir": np.array([[0.0, 0.3, -0.2], [1.0, 0.0, 2.5]], np.float32),
         "red": np.array([[0.0, 0.1, 0.0], [-1.0, 3.0, 0.5]], np.float32)}


def _check_accepted(text: str) -> None:
    try:
        expr = parse(text, {"nir", "red"})
    except ConfigError as exc:
        assert str(exc).startswith("expression: ") and "\n" not in str(exc)
        return
    audit(text, {"nir", "red"})
    out = expr.evaluate(SMALL)
    assert out.shape == (2, 3) and out.dtype == np.float32 and not np.isinf(out).any()


LEAF = st.one_of(
    st.sampled_from(["nir", "red"]),
    st.floats(-1e3, 1e3, allow_nan=False).map(lambda v: f"({v!r})"),
    st.integers(0, 10).map(str),
)
EXPR = st.deferred(lambda: st.recursive(LEAF, lambda inner: st.one_of(
    st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "**", "%"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    st.tuples(inner, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    st.tuples(st.sampled_from(["-", "+", "not "]), inner).map(lambda t: f"({t[0]}{t[1]})"),
    st.tuples(st.sampled_from(["abs", "sqrt", "log", "log10", "exp"]), inner).map(lambda t: f"{t[0]}({t[1]})"),
    st.tuples(st.sampled_from(["minimum", "maximum"]), inner, inner).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
    st.tuples(inner, inner, inner).map(lambda t: f"where({t[0]}, {t[1]}, {t[2]})"),
), max_leaves=12))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EXPR.filter(lambda t: "nir" in t or "red" in t))
def test_random_allowed_expressions_evaluate_lazily_and_eagerly_alike(text):
    """Every expression built from the allowed grammar parses, evaluates without a warning to
    finite-or-NaN float32, and its lazy form on uneven chunks equals the eager one."""
    expr = parse(text, {"nir", "red"})
    audit(text, {"nir", "red"})
    rng = np.random.default_rng(len(text))
    arrays = {k: rng.normal(0, 2, (9, 11)).astype(np.float32) for k in ("nir", "red")}
    arrays["red"][0, :4] = 0
    eager = expr.evaluate(arrays)
    assert eager.dtype == np.float32 and eager.shape == (9, 11) and not np.isinf(eager).any()
    lazy = expr.lazy({k: da.from_array(v, chunks=(4, 5)) for k, v in arrays.items()})
    np.testing.assert_array_equal(lazy.compute(scheduler="sync"), eager)


DANGEROUS = [".__class__", "[0]", "__import__('os')", "eval", "(lambda: 1)()", " if nir else ", "'s'", "x", "= 1",
             " & ", "~", ", ", "*", "**", "os.system('true')", " for x in nir", "__builtins__", "getattr", "(", ")",
             " and ", " or ", "not ", "where", "abs", "-", "1e999", "True", "import os; ", "\\n", "#", ":=",
             " + 1", " * nir", " ** 2", "red - "]


@st.composite
def spliced(draw):
    """A well-formed allowed expression with a dangerous (or harmless) fragment spliced in."""
    text = draw(EXPR)
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(st.sampled_from(DANGEROUS)) + text[at:]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=20).map(" ".join), spliced()))
def test_mangled_expressions_are_refused_or_safe(text):
    """Token soups and allowed expressions with fragments spliced in: parse raises nothing but a
    one-line ConfigError, and whatever it accepts holds only allow-listed constructs (checked by
    an independent walk of Python's own parse tree) and evaluates without a warning."""
    _check_accepted(text)
