"""Band math: a safe, lazy evaluator for expressions on named bands, and the common Landsat indices.

An expression such as ``(nir - red) / (nir + red)`` is parsed with Python's :mod:`ast` module and
checked against an allow-list (numbers, band names, arithmetic, comparisons, ``and``/``or``/``not``
and a few numpy functions); the checked tree is turned into plain tuples and evaluated by walking
them with numpy ufuncs. Python's ``eval``/``compile`` are never used, so an expression can do
nothing but arithmetic on the arrays it is given.

Semantics (the same as QGIS's raster calculator for these operators):

* Values are computed in the result dtype: float32, or float64 when a band the expression uses is
  float64 or a 32/64-bit integer (their values need more than float32's 24-bit mantissa).
* A value that is not finite (division by zero, ``sqrt``/``log`` of a negative, ``log(0)``,
  overflow of the result dtype) becomes NaN (nodata) and stays NaN through every later operation,
  as QGIS turns such pixels into nodata and propagates nodata. ``where`` picks a branch, so a NaN
  in the branch not taken does not reach the result.
* Comparisons and ``and``/``or``/``not`` give 1.0 (true) or 0.0 (false), NaN if an operand is NaN;
  any non-zero number is true. ``where(cond, a, b)`` is ``a`` where ``cond`` is non-zero.
* Python's ``&``/``|``/``~`` are refused: they bind tighter than comparisons, so ``a > 1 & b < 2``
  would silently mean ``a > (1 & b) < 2``; ``and``/``or``/``not`` read as written.
"""

from __future__ import annotations

import ast
import difflib
import keyword
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

import numpy as np

from .errors import ConfigError

__all__ = [
    "Expression", "parse", "index", "result_dtype", "check_band_names",
    "FUNCTIONS", "INDICES", "Index", "LANDSAT_OLI_BANDS", "LANDSAT_TM_ETM_BANDS",
    "MAX_LENGTH", "MAX_NODES", "MAX_DEPTH",
]

#: the longest expression accepted, in characters
MAX_LENGTH = 2000
#: the most operand and operator nodes an expression may have
MAX_NODES = 500
#: the deepest nesting of operations (and of parentheses) an expression may have
MAX_DEPTH = 100

KEY = "expression"

# --------------------------------------------------------------------------- the allow-list
_BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.Mod: "%"}
_UNARY = {ast.UAdd: "+", ast.USub: "-"}
_COMPARE = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_REFUSED_OPERATORS = {
    ast.BitAnd: "'&' is not allowed; use 'and'",
    ast.BitOr: "'|' is not allowed; use 'or'",
    ast.BitXor: "'^' is not allowed; use '**' for a power",
    ast.Invert: "'~' is not allowed; use 'not'",
    ast.FloorDiv: "'//' is not allowed",
    ast.LShift: "'<<' is not allowed",
    ast.RShift: "'>>' is not allowed",
    ast.MatMult: "'@' is not allowed",
    ast.Is: "'is' is not allowed; use '=='",
    ast.IsNot: "'is not' is not allowed; use '!='",
    ast.In: "'in' is not allowed",
    ast.NotIn: "'not in' is not allowed",
}

#: allowed functions: name -> (number of arguments, signature shown in messages)
FUNCTIONS: dict[str, tuple[int, str]] = {
    "abs": (1, "abs(x)"),
    "clip": (3, "clip(x, lo, hi)"),
    "exp": (1, "exp(x)"),
    "log": (1, "log(x)"),
    "log10": (1, "log10(x)"),
    "maximum": (2, "maximum(a, b)"),
    "minimum": (2, "minimum(a, b)"),
    "sqrt": (1, "sqrt(x)"),
    "where": (3, "where(cond, a, b)"),
}

_REFUSED_NODES: list[tuple[type, str]] = [
    (ast.Attribute, "attribute access (x.y) is not allowed"),
    (ast.Subscript, "subscripts (x[i]) are not allowed"),
    (ast.Lambda, "lambda is not allowed"),
    ((ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp), "comprehensions are not allowed"),
    (ast.IfExp, "'a if c else b' is not allowed; use where(c, a, b)"),
    ((ast.Tuple, ast.List, ast.Set, ast.Dict), "tuples, lists, sets and dicts are not allowed"),
    ((ast.JoinedStr, ast.FormattedValue), "strings are not allowed"),
    (ast.Starred, "starred arguments (*x) are not allowed"),
    (ast.NamedExpr, "assignment (:=) is not allowed"),
    ((ast.Await, ast.Yield, ast.YieldFrom), "await and yield are not allowed"),
    (ast.Slice, "subscripts (x[i]) are not allowed"),
]


def _refuse(what: str) -> ConfigError:
    return ConfigError(f"{KEY}: {what}")


# --------------------------------------------------------------------------- dtypes
def result_dtype(dtypes) -> np.dtype:
    """The dtype an expression computes in, from the dtypes of the bands it uses.

    Parameters
    ----------
    dtypes : iterable of numpy dtype-like
        Dtypes of the input bands (bool, integer or real floating point).

    Returns
    -------
    numpy.dtype
        float64 if any input is float64 (or wider) or a 32/64-bit integer, whose values float32's
        24-bit mantissa cannot hold exactly; float32 otherwise (bool, 8/16-bit integers, float16,
        float32), as for an empty list.

    Raises
    ------
    ValueError
        For a complex, string, datetime or object dtype.
    """
    wide = False
    for dt in dtypes:
        dt = np.dtype(dt)
        if dt.kind in "iuf":
            wide = wide or dt.itemsize >= (8 if dt.kind == "f" else 4)
        elif dt.kind != "b":
            raise ValueError(f"{KEY}: band dtype {dt} is not supported; bands must be integer or real")
    return np.dtype(np.float64 if wide else np.float32)


def check_band_names(names) -> None:
    """Refuse band names an expression could not refer to.

    Parameters
    ----------
    names : iterable of str
        The names given to the input bands (the keys under ``bands:``).

    Raises
    ------
    ConfigError
        ``bands: ...`` for a name that is not an identifier (letters, digits and ``_``, not starting
        with a digit), is a Python keyword, or starts with ``_``.
    """
    for name in names:
        if not (isinstance(name, str) and name.isidentifier() and name.isascii()) or keyword.iskeyword(name) \
                or name.startswith("_"):
            raise ConfigError(
                f"bands: name {name!r} cannot be used in an expression; use letters, digits and '_' "
                "(not first), e.g. nir, swir1"
            )


# --------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class Expression:
    """A checked band-math expression, ready to evaluate on numpy blocks or dask arrays.

    Build one with :func:`parse` or :func:`index`. The checked tree is plain tuples of strings and
    floats, so an Expression pickles (dask.distributed) and tokenises deterministically.

    Attributes
    ----------
    text : str
        The expression as written.
    names : frozenset of str
        The band names it uses.
    """

    text: str
    names: frozenset[str]
    tree: tuple = field(repr=False)

    def __str__(self) -> str:
        return self.text

    def __dask_tokenize__(self) -> tuple:
        return ("sceneclass.expression", self.tree)

    def result_dtype(self, dtypes: Mapping[str, Any]) -> np.dtype:
        """The result dtype for the given band dtypes (only the bands the expression uses count).

        Parameters
        ----------
        dtypes : mapping of str to numpy dtype-like
            Dtype of each named band.

        Returns
        -------
        numpy.dtype
            float32 or float64, see :func:`result_dtype`.
        """
        return result_dtype(dtypes[name] for name in sorted(self.names))

    def evaluate(self, arrays: Mapping[str, np.ndarray], dtype=None) -> np.ndarray:
        """Evaluate on numpy arrays (one block, or a whole band in memory).

        Parameters
        ----------
        arrays : mapping of str to numpy.ndarray
            The named bands, all of one shape (e.g. ``(rows, cols)``), any integer or real dtype;
            bands the expression does not use are ignored. They are not modified.
        dtype : numpy dtype-like, optional
            float32 or float64 to compute in; default :meth:`result_dtype` of the bands used.

        Returns
        -------
        numpy.ndarray
            A new array of the bands' shape and ``dtype``; NaN where the result is not finite
            (division by zero, square root or logarithm of a negative, overflow) or an input is NaN.
            No numpy RuntimeWarning is emitted.

        Raises
        ------
        ValueError
            If a band the expression uses is missing, the shapes differ, or ``dtype`` is not
            float32/float64.
        TypeError
            If a band is not a numpy array (a dask array would be computed whole: use :meth:`lazy`).
        """
        bands = self._bands(arrays)
        for name, arr in bands.items():
            if not isinstance(arr, np.ndarray):
                raise TypeError(f"{KEY}: band '{name}' is a {type(arr).__name__}, not a numpy array "
                                "(use Expression.lazy for dask arrays)")
        dtype = self.result_dtype({n: a.dtype for n, a in bands.items()}) if dtype is None else np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"{KEY}: can only compute in float32 or float64, not {dtype}")
        shape = _common(bands, lambda a: a.shape, "shape")
        with np.errstate(all="ignore"):
            walker = _Walker(bands, dtype)
            out = np.asarray(walker.value(self.tree), dtype=dtype)
            if out.shape != shape or any(np.may_share_memory(out, a) for a in bands.values()):
                out = np.array(np.broadcast_to(out, shape), dtype=dtype)  # a new array, never an input
            np.copyto(out, dtype.type(np.nan), where=~np.isfinite(out))
        return out

    def lazy(self, arrays: Mapping[str, Any]):
        """Build the expression lazily over dask arrays: one ``map_blocks`` task per chunk.

        Parameters
        ----------
        arrays : mapping of str to dask.array.Array
            The named bands, all of one shape and the same chunks; bands the expression does not
            use are ignored.

        Returns
        -------
        dask.array.Array
            Of the bands' shape and chunks and dtype :meth:`result_dtype`; nothing is computed.

        Raises
        ------
        ValueError
            If a band the expression uses is missing, or the bands differ in shape or chunks
            (they are not rechunked silently: rechunk them to the same chunks first).
        TypeError
            If a band is not a dask array.
        """
        import dask.array as da
        from dask.base import tokenize

        bands = self._bands(arrays)
        for name, arr in bands.items():
            if not isinstance(arr, da.Array):
                raise TypeError(f"{KEY}: band '{name}' is a {type(arr).__name__}, not a dask array")
        _common(bands, lambda a: a.shape, "shape")
        _common(bands, lambda a: a.chunks, "chunks")
        dtype = self.result_dtype({n: a.dtype for n, a in bands.items()})
        names = tuple(sorted(bands))
        blocks = [bands[n] for n in names]
        return da.map_blocks(
            _evaluate_block, *blocks, expression=self, names=names, result=dtype, dtype=dtype,
            meta=np.empty((0,) * blocks[0].ndim, dtype=dtype),
            name="expression-" + tokenize(self, names, dtype, *blocks),
        )

    def _bands(self, arrays: Mapping[str, Any]) -> dict[str, Any]:
        missing = sorted(self.names - set(arrays))
        if missing:
            raise ValueError(f"{KEY}: no array given for band(s) {', '.join(missing)} used in {self.text!r}")
        return {name: arrays[name] for name in sorted(self.names)}


def _evaluate_block(*blocks: np.ndarray, expression: Expression, names: tuple, result: np.dtype) -> np.ndarray:
    """One chunk of :meth:`Expression.lazy`: the named blocks, evaluated in dtype ``result``."""
    return expression.evaluate(dict(zip(names, blocks)), result)


def _common(bands: dict[str, Any], attr, what: str):
    """The one value of ``attr(band)`` over all bands, or ValueError naming two that differ."""
    items = list(bands.items())
    first_name, first = items[0][0], attr(items[0][1])
    for name, arr in items[1:]:
        if attr(arr) != first:
            raise ValueError(
                f"{KEY}: bands '{first_name}' and '{name}' differ in {what} ({first} and {attr(arr)})"
                + ("; rechunk them to the same chunks" if what == "chunks" else "")
            )
    return first


def parse(text: str, names) -> Expression:
    """Check an expression on named bands and return it ready to evaluate.

    Allowed: int/float numbers; the band names in ``names``; unary ``+ -``; binary
    ``+ - * / ** %``; comparisons ``< <= > >= == !=`` (chains such as ``0 < x < 1`` too);
    ``and``, ``or``, ``not``; parentheses; calls to ``where(cond, a, b)``, ``abs``, ``sqrt``,
    ``log`` (natural), ``log10``, ``exp``, ``clip(x, lo, hi)``, ``minimum(a, b)`` and
    ``maximum(a, b)`` with positional arguments. Everything else is refused.

    Parameters
    ----------
    text : str
        The expression, e.g. ``"(nir - red) / (nir + red)"``; at most :data:`MAX_LENGTH`
        characters, :data:`MAX_NODES` operands and operators and :data:`MAX_DEPTH` levels.
    names : set of str
        The band names the expression may use.

    Returns
    -------
    Expression

    Raises
    ------
    ConfigError
        One line starting ``expression:`` that says what is not allowed, e.g.
        ``expression: unknown band 'nri' (did you mean 'nir'?)``.
    """
    names = frozenset(names)
    if not isinstance(text, str):
        raise _refuse(f"must be text, not {type(text).__name__}")
    source = text.strip()
    if not source:
        raise _refuse("is empty")
    if len(source) > MAX_LENGTH:
        raise _refuse(f"is {len(source)} characters long; at most {MAX_LENGTH} are allowed")
    _check_brackets(source)
    try:
        with warnings.catch_warnings():  # e.g. "invalid decimal literal" in '1if': refused, not printed
            warnings.simplefilter("error", SyntaxWarning)
            tree = ast.parse(source, mode="eval")
    except SyntaxWarning as exc:
        raise _refuse(f"invalid syntax ({exc})") from None
    except SyntaxError as exc:
        where = f" at column {exc.offset}" if exc.offset else ""
        detail = f" ({exc.msg})" if exc.msg and exc.msg != "invalid syntax" else ""
        raise _refuse(f"invalid syntax{where}{detail}") from None
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        raise _refuse(f"cannot be parsed ({type(exc).__name__})") from None
    _check_size(tree)
    used: set[str] = set()
    checked = _Checker(source, names, used).node(tree.body)
    if not used:
        raise _refuse(
            "uses no band" + (f"; use at least one of {', '.join(sorted(names))}" if names else "")
        )
    return Expression(text=source, names=frozenset(used), tree=checked)


def _check_brackets(source: str) -> None:
    """Refuse bracket nesting deeper than MAX_DEPTH before Python's parser sees it."""
    depth = 0
    for ch in source:
        if ch in "([{":
            depth += 1
            if depth > MAX_DEPTH:
                raise _refuse(f"is nested too deeply (more than {MAX_DEPTH} levels of brackets)")
        elif ch in ")]}":
            depth -= 1


def _check_size(tree: ast.AST) -> None:
    """Refuse trees with more than MAX_NODES nodes or deeper than MAX_DEPTH, without recursion."""
    count = 0
    stack = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)):
            continue
        count += 1
        if count > MAX_NODES:
            raise _refuse(f"is too long (more than {MAX_NODES} operands and operators)")
        if depth > MAX_DEPTH:
            raise _refuse(f"is nested too deeply (more than {MAX_DEPTH} levels of operations)")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


class _Checker:
    """Turns a size-checked ``ast`` tree into plain tuples, refusing anything not allowed."""

    def __init__(self, source: str, names: frozenset[str], used: set[str]):
        self.source = source
        self.names = names
        self.used = used

    def node(self, node: ast.AST) -> tuple:
        for kinds, message in _REFUSED_NODES:
            if isinstance(node, kinds):
                raise _refuse(message)
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            raise _refuse(f"{type(node).__name__} is not allowed")
        return method(node)

    def _Constant(self, node: ast.Constant) -> tuple:
        value = node.value
        if isinstance(value, (str, bytes)):
            raise _refuse("strings are not allowed")
        if isinstance(value, bool) or value is None or value is Ellipsis:
            raise _refuse(f"'{value}' is not allowed; only numbers and band names are")
        if isinstance(value, complex):
            raise _refuse(f"complex number {value!r} is not allowed")
        try:
            number = float(value)
        except OverflowError:
            raise _refuse(f"number {str(value)[:20]}... is too large") from None
        if not math.isfinite(number):
            raise _refuse(f"number {ast.get_source_segment(self.source, node)} is too large for a float")
        return ("num", number)

    def _Name(self, node: ast.Name) -> tuple:
        name = node.id
        if name in self.names:
            self.used.add(name)
            return ("band", name)
        if name in FUNCTIONS:
            raise _refuse(f"function '{name}' must be called, e.g. {FUNCTIONS[name][1]}")
        if not self.names:
            raise _refuse(f"unknown band '{name}'; no bands are defined")
        close = difflib.get_close_matches(name, sorted(self.names), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f"; bands: {', '.join(sorted(self.names))}"
        raise _refuse(f"unknown band '{name}'{hint}")

    def _UnaryOp(self, node: ast.UnaryOp) -> tuple:
        if isinstance(node.op, ast.Not):
            return ("not", self.node(node.operand))
        if type(node.op) not in _UNARY:
            raise _refuse(_REFUSED_OPERATORS.get(type(node.op)) or f"operator {type(node.op).__name__} is not allowed")
        return ("unary", _UNARY[type(node.op)], self.node(node.operand))

    def _BinOp(self, node: ast.BinOp) -> tuple:
        if type(node.op) not in _BINARY:
            raise _refuse(_REFUSED_OPERATORS.get(type(node.op)) or f"operator {type(node.op).__name__} is not allowed")
        return ("binary", _BINARY[type(node.op)], self.node(node.left), self.node(node.right))

    def _BoolOp(self, node: ast.BoolOp) -> tuple:
        kind = "and" if isinstance(node.op, ast.And) else "or"
        return (kind, tuple(self.node(v) for v in node.values))

    def _Compare(self, node: ast.Compare) -> tuple:
        for op in node.ops:
            if type(op) not in _COMPARE:
                raise _refuse(_REFUSED_OPERATORS.get(type(op)) or f"comparison {type(op).__name__} is not allowed")
        operands = [self.node(node.left), *(self.node(c) for c in node.comparators)]
        parts = tuple(
            ("compare", _COMPARE[type(op)], operands[i], operands[i + 1]) for i, op in enumerate(node.ops)
        )
        return parts[0] if len(parts) == 1 else ("and", parts)  # 0 < x < 1: (0 < x) and (x < 1)

    def _Call(self, node: ast.Call) -> tuple:
        allowed = ", ".join(sorted(FUNCTIONS))
        if not isinstance(node.func, ast.Name):
            if isinstance(node.func, ast.Attribute):
                raise _refuse("attribute access (x.y) is not allowed")
            raise _refuse(f"only the functions {allowed} can be called")
        name = node.func.id
        if name not in FUNCTIONS:
            raise _refuse(f"unknown function '{name}'; allowed: {allowed}")
        if node.keywords:
            raise _refuse(f"keyword arguments are not allowed; call {FUNCTIONS[name][1]}")
        arity, signature = FUNCTIONS[name]
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise _refuse("starred arguments (*x) are not allowed")
        if len(node.args) != arity:
            raise _refuse(f"{name}() takes {arity} argument{'s' if arity > 1 else ''}, "
                          f"got {len(node.args)}: {signature}")
        args = tuple(self.node(a) for a in node.args)
        if name == "clip" and args[1][0] == "num" and args[2][0] == "num" and args[1][1] > args[2][1]:
            raise _refuse(f"clip(x, lo, hi) needs lo <= hi, got lo={args[1][1]:g}, hi={args[2][1]:g}")
        return ("call", name, args)


# --------------------------------------------------------------------------- evaluation
_UFUNC_BINARY = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "**": np.power, "%": np.mod}
_UFUNC_COMPARE = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
                  "==": np.equal, "!=": np.not_equal}
_UFUNC_ONE = {"abs": np.abs, "sqrt": np.sqrt, "log": np.log, "log10": np.log10, "exp": np.exp}


class _Walker:
    """Evaluates a checked tuple tree on numpy arrays, every value float32/float64, inf -> NaN."""

    def __init__(self, bands: dict[str, np.ndarray], dtype: np.dtype):
        self.bands = bands
        self.dtype = dtype
        self.nan = dtype.type(np.nan)
        self.cache: dict[str, np.ndarray] = {}

    def value(self, node: tuple):
        kind = node[0]
        if kind == "num":
            return self.dtype.type(node[1])
        if kind == "band":
            return self.band(node[1])
        if kind == "unary":
            operand = self.value(node[2])
            return operand if node[1] == "+" else np.negative(operand)
        if kind == "binary":
            return self.finite(_UFUNC_BINARY[node[1]](self.value(node[2]), self.value(node[3])))
        if kind == "compare":
            left, right = self.value(node[2]), self.value(node[3])
            return self.truth(_UFUNC_COMPARE[node[1]](left, right), np.isnan(left) | np.isnan(right))
        if kind in ("and", "or"):
            values = [self.value(v) for v in node[1]]
            truths = [v != 0 for v in values]
            combine = np.logical_and if kind == "and" else np.logical_or
            result = truths[0]
            unknown = np.isnan(values[0])
            for value, truth in zip(values[1:], truths[1:]):
                result = combine(result, truth)
                unknown = unknown | np.isnan(value)
            return self.truth(result, unknown)
        if kind == "not":
            operand = self.value(node[1])
            return self.truth(operand == 0, np.isnan(operand))
        if kind == "call":
            return self.call(node[1], [self.value(a) for a in node[2]])
        raise AssertionError(f"unknown node {kind!r}")  # the checker only builds the kinds above

    def call(self, name: str, args: list):
        if name in _UFUNC_ONE:
            return self.finite(_UFUNC_ONE[name](args[0]))
        if name == "where":
            cond, a, b = args
            return np.where(np.isnan(cond), self.nan, np.where(cond != 0, a, b)).astype(self.dtype, copy=False)
        if name == "minimum":
            return np.minimum(args[0], args[1])
        if name == "maximum":
            return np.maximum(args[0], args[1])
        if name == "clip":
            return np.minimum(np.maximum(args[0], args[1]), args[2])
        raise AssertionError(f"unknown function {name!r}")

    def band(self, name: str) -> np.ndarray:
        if name not in self.cache:
            arr = self.bands[name].astype(self.dtype, copy=False)
            if np.isinf(arr).any():
                arr = np.where(np.isinf(arr), self.nan, arr)
            self.cache[name] = arr
        return self.cache[name]

    def finite(self, value):
        """``value`` with +-inf replaced by NaN (in place: ``value`` is a fresh ufunc result)."""
        if isinstance(value, np.ndarray):
            np.copyto(value, self.nan, where=np.isinf(value))
            return value
        return value if not np.isinf(value) else self.nan

    def truth(self, truth, unknown):
        """A boolean result as 1.0/0.0 in the dtype, NaN where an operand was NaN."""
        return np.where(unknown, self.nan, np.asarray(truth, dtype=self.dtype)).astype(self.dtype, copy=False)


# --------------------------------------------------------------------------- presets
class Index(NamedTuple):
    """A named spectral index: its expression, the band names it needs, what it shows, its source."""

    expression: str
    bands: tuple[str, ...]
    description: str
    reference: str


#: the common Landsat spectral indices; band names as in :data:`LANDSAT_OLI_BANDS`
INDICES: dict[str, Index] = {
    "ndvi": Index(
        "(nir - red) / (nir + red)", ("nir", "red"),
        "Normalized Difference Vegetation Index: green vegetation is high (about 0.2 to 0.9)",
        "Rouse, Haas, Schell & Deering (1974), Monitoring vegetation systems in the Great Plains with "
        "ERTS, Third ERTS Symposium, NASA SP-351, 309-317; Tucker (1979), Remote Sensing of "
        "Environment 8(2), 127-150",
    ),
    "ndwi": Index(
        "(green - nir) / (green + nir)", ("green", "nir"),
        "Normalized Difference Water Index (McFeeters): open water is positive",
        "McFeeters (1996), The use of the Normalized Difference Water Index (NDWI) in the delineation "
        "of open water features, International Journal of Remote Sensing 17(7), 1425-1432, "
        "doi:10.1080/01431169608948714",
    ),
    "mndwi": Index(
        "(green - swir1) / (green + swir1)", ("green", "swir1"),
        "Modified NDWI: open water is positive, built-up land suppressed",
        "Xu (2006), Modification of normalised difference water index (NDWI) to enhance open water "
        "features in remotely sensed imagery, International Journal of Remote Sensing 27(14), "
        "3025-3033, doi:10.1080/01431160600589179",
    ),
    "nbr": Index(
        "(nir - swir2) / (nir + swir2)", ("nir", "swir2"),
        "Normalized Burn Ratio: burned areas are low (dNBR = pre-fire NBR - post-fire NBR)",
        "Key & Benson (2006), Landscape Assessment (LA): sampling and analysis methods, in FIREMON: "
        "Fire Effects Monitoring and Inventory System, USDA Forest Service RMRS-GTR-164-CD",
    ),
    "ndbi": Index(
        "(swir1 - nir) / (swir1 + nir)", ("nir", "swir1"),
        "Normalized Difference Built-up Index: built-up land is positive",
        "Zha, Gao & Ni (2003), Use of normalized difference built-up index in automatically mapping "
        "urban areas from TM imagery, International Journal of Remote Sensing 24(3), 583-594, "
        "doi:10.1080/01431160304987",
    ),
    "savi": Index(
        "(1 + 0.5) * (nir - red) / (nir + red + 0.5)", ("nir", "red"),
        "Soil-Adjusted Vegetation Index with L = 0.5; needs surface reflectance (0-1), not digital numbers",
        "Huete (1988), A soil-adjusted vegetation index (SAVI), Remote Sensing of Environment 25(3), "
        "295-309, doi:10.1016/0034-4257(88)90106-X",
    ),
}

#: Landsat 8/9 OLI band numbers for the band names the indices use
LANDSAT_OLI_BANDS: dict[str, str] = {
    "coastal": "B1", "blue": "B2", "green": "B3", "red": "B4", "nir": "B5", "swir1": "B6", "swir2": "B7",
}
#: Landsat 4-5 TM and Landsat 7 ETM+ band numbers for the same names (B6 is thermal there)
LANDSAT_TM_ETM_BANDS: dict[str, str] = {
    "blue": "B1", "green": "B2", "red": "B3", "nir": "B4", "swir1": "B5", "swir2": "B7",
}


def index(name: str) -> Expression:
    """The expression of a named spectral index (see :data:`INDICES`).

    Parameters
    ----------
    name : str
        ``ndvi``, ``ndwi``, ``mndwi``, ``nbr``, ``ndbi`` or ``savi`` (case does not matter).

    Returns
    -------
    Expression
        Using the band names listed in ``INDICES[name].bands``.

    Raises
    ------
    ConfigError
        ``index: unknown index 'x'; one of ...`` for any other name.
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in INDICES:
        close = difflib.get_close_matches(str(key), sorted(INDICES), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"index: unknown index {name!r}{hint}; one of {', '.join(sorted(INDICES))}")
    preset = INDICES[key]
    return parse(preset.expression, set(preset.bands))
