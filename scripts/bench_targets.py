"""The benchmark's targets, computed from a results dict (``bench.json``): a pure function.

Every target is one row ``{"target", "measured", "ok"}``: ``ok`` is True/False, or None when the
bench did not run what the target needs (``measured`` then says what is missing). Ratios are
the bench's within-round wall-time ratios (median over rounds); peak RSS is the largest over
rounds. Row ids are those of ``scripts/bench.py``: ``sceneclass/DTYPE/SCHEME/OUTPUT``,
``numpy/DTYPE/SCHEME``, ``xarray-spatial/DTYPE/SCHEME``, and ``read``, ``copy``, ``recipe``,
``floor`` (uint16, equal_interval 20).
"""

from __future__ import annotations

#: peak RSS ceiling of every case at 4x and 16x (MiB), and the flatness against 1x
RSS_CEILING_MIB = 300
RSS_FLAT = 1.10


def sc(dtype: str, scheme: str, output: str = "cog") -> str:
    return f"sceneclass/{dtype}/{scheme}/{output}"


def ref_row(kind: str, dtype: str, scheme: str) -> str:
    return f"{kind}/{dtype}/{scheme}"


def _ratio(sz: dict | None, a: str, b: str) -> float | None:
    if not sz:
        return None
    return (sz.get("ratios_wall") or {}).get(a, {}).get(b)


def _rss(sz: dict | None, row: str) -> float | None:
    if not sz:
        return None
    r = (sz.get("rows") or {}).get(row) or {}
    return r.get("rss_mib_max") if r.get("status") == "ok" else None


def _wall(sz: dict | None, row: str) -> float | None:
    if not sz:
        return None
    r = (sz.get("rows") or {}).get(row) or {}
    return r.get("wall_median_s") if r.get("status") == "ok" else None


def _row(target: str, value: float | None, limit: float, fmt: str = "{:.2f}", missing: str = "not measured",
         note: str = "") -> dict:
    if value is None:
        return {"target": target, "measured": missing, "ok": None}
    text = fmt.format(value) + (f" ({note})" if note else "")
    return {"target": target, "measured": text, "ok": bool(value <= limit)}


def _worst(target: str, pairs: list[tuple[str, float | None]], limit: float, fmt: str = "{:.2f}") -> dict:
    """One row for a target that must hold for every case: the worst case is quoted."""
    got = [(case, v) for case, v in pairs if v is not None]
    missing = [case for case, v in pairs if v is None]
    if not got:
        return {"target": target, "measured": "not measured", "ok": None}
    case, v = max(got, key=lambda cv: cv[1])
    text = f"worst {fmt.format(v)} ({case}) over {len(got)} case(s)"
    if missing:
        text += f"; {len(missing)} not measured"
    return {"target": target, "measured": text, "ok": bool(v <= limit) and not missing}


def cases(results: dict) -> list[tuple[str, str, str]]:
    """The (dtype, scheme, output) cases of the run, from its settings."""
    s = results.get("settings") or {}
    return [(d, sch, o) for d in s.get("dtypes", []) for sch in s.get("schemes", []) for o in s.get("outputs", [])]


def compute_targets(results: dict) -> list[dict]:
    """Every target of the benchmark as ``{"target", "measured", "ok"}`` rows, in a fixed order.

    Parameters
    ----------
    results : dict
        The bench's results (``bench.json``): ``settings`` (dtypes, schemes, outputs),
        ``sizes`` (per size: ``rows`` with ``status``, ``wall_median_s``, ``rss_mib_max``, and
        ``ratios_wall[a][b]``) and optionally ``batch`` (``overhead_per_scene_s``).

    Returns
    -------
    list of dict
        ``ok`` is True (met), False (missed) or None (not measured in this run).
    """
    sizes = results.get("sizes") or {}
    s1, s4, s16 = sizes.get("1x"), sizes.get("4x"), sizes.get("16x")
    u_ei = sc("uint16", "equal_interval")
    out: list[dict] = []
    # --- the uint16 targets of the first benchmark (issue #3), kept
    out.append(_row("1x: at least 4x faster than `recipe` (ratio ≤ 0.25)", _ratio(s1, u_ei, "recipe"), 0.25))
    out.append(_row("1x: at least 2x faster than `xarray-spatial` (ratio ≤ 0.5)",
                    _ratio(s1, u_ei, ref_row("xarray-spatial", "uint16", "equal_interval")), 0.5))
    for name, sz, limit in (("1x", s1, 1.0), ("4x", s4, 0.7), ("16x", s16, 0.7)):
        out.append(_row(f"{name}: uint16 equal_interval at most {limit}x `numpy`",
                        _ratio(sz, u_ei, ref_row("numpy", "uint16", "equal_interval")), limit))
    for name, sz in (("4x", s4), ("16x", s16)):
        out.append(_row(f"{name}: uint16 equal_interval within 1.3x of `floor`", _ratio(sz, u_ei, "floor"), 1.3))
    out.append(_row("1x: uint16 equal_interval peak RSS at most 500 MiB", _rss(s1, u_ei), 500, "{:.0f} MiB"))
    w1, w16 = _wall(s1, u_ei), _wall(s16, u_ei)
    out.append(_row("16x wall time at most 17x the 1x wall time (uint16 equal_interval)",
                    w16 / w1 if w1 and w16 else None, 17))
    # --- flat memory for every case
    all_cases = cases(results)
    for name, sz in (("4x", s4), ("16x", s16)):
        if sz is None:
            out.append({"target": f"{name}: peak RSS at most {RSS_CEILING_MIB} MiB, every case",
                        "measured": f"{name} not run", "ok": None})
            out.append({"target": f"{name}: peak RSS within 10% of 1x, every case",
                        "measured": f"{name} not run", "ok": None})
            continue
        label = {c: "/".join(c) for c in all_cases}
        out.append(_worst(f"{name}: peak RSS at most {RSS_CEILING_MIB} MiB, every case",
                          [(label[c], _rss(sz, sc(*c))) for c in all_cases], RSS_CEILING_MIB, "{:.0f} MiB"))
        flat = []
        for c in all_cases:
            a, b = _rss(sz, sc(*c)), _rss(s1, sc(*c))
            flat.append((label[c], a / b if a and b else None))
        out.append(_worst(f"{name}: peak RSS within 10% of 1x, every case (ratio ≤ {RSS_FLAT})", flat, RSS_FLAT))
    # --- float32
    for scheme in ("equal_interval", "quantile"):
        out.append(_row(f"4x: float32 {scheme} at most 0.4x `numpy`",
                        _ratio(s4, sc("float32", scheme), ref_row("numpy", "float32", scheme)), 0.4))
    for name, sz in (("4x", s4), ("16x", s16)):
        out.append(_row(f"{name}: float32 equal_interval within 1.3x of uint16 equal_interval",
                        _ratio(sz, sc("float32", "equal_interval"), u_ei), 1.3))
    # --- natural breaks
    for dtype, limit in (("uint16", 1.15), ("float32", 1.5)):
        out.append(_row(f"4x: {dtype} natural_breaks within {limit}x of equal_interval",
                        _ratio(s4, sc(dtype, "natural_breaks"), sc(dtype, "equal_interval")), limit))
    # --- outputs
    for output, label in (("zarr", "Zarr"), ("rgb", "RGB COG")):
        for name, sz in (("4x", s4), ("16x", s16)):
            pairs = [("/".join((d, sch)), _ratio(sz, sc(d, sch, output), sc(d, sch, "cog")))
                     for d, sch, o in all_cases if o == output]
            if not pairs:
                out.append({"target": f"{name}: {label} within 1.3x of paletted COG, every case",
                            "measured": "not measured", "ok": None})
            else:
                out.append(_worst(f"{name}: {label} within 1.3x of paletted COG, every case", pairs, 1.3))
    # --- batch
    b = results.get("batch") or {}
    out.append(_row("batch: per-scene overhead at most 0.15 s", b.get("overhead_per_scene_s"), 0.15, "{:.3f} s"))
    return out


def targets_table(rows: list[dict]) -> list[str]:
    """The targets as a Markdown table."""
    lines = ["| target | measured | met |", "|---|---|---|"]
    for r in rows:
        met = "–" if r["ok"] is None else ("yes" if r["ok"] else "**no**")
        lines.append(f"| {r['target']} | {r['measured']} | {met} |")
    return lines
