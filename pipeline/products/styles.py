"""Style files for the classified raster, from the run's legend (the same edges and colours).

All three describe the **class ids** of the output (the paletted COG's band 1, or the Zarr
store's ``classes``): id 0 is nodata, ids 1..N the classes, labelled with their value ranges.

* ``NAME.qml``: a QGIS paletted renderer (``rasterrenderer type="paletted"``); QGIS loads a
  ``.qml`` with the raster's base name automatically.
* ``NAME.sld``: an SLD 1.0 ``RasterSymbolizer`` with a ``ColorMap type="intervals"``
  (GeoServer: an entry's colour applies to ``previous quantity <= x < quantity``, values below
  the first quantity take the first colour), so entry k has quantity k + 1; id 0 is transparent.
* ``NAME.colors.txt``: a GDAL colour file (``value r g b a`` lines plus ``nv 0 0 0 0``) for
  ``gdaldem color-relief -exact_color_entry``, which turns the paletted COG into the RGB(A)
  image that ``output.mode: rgb`` writes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from ..palette import to_hex
from ..urls import redact

QGIS_DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"
SLD_NS = "http://www.opengis.net/sld"


def palette_from_legend(legend: dict) -> np.ndarray:
    """The (N+1, 4) RGBA table the raster was written with: row 0 nodata, rows 1..N the classes."""
    rows = [[0, 0, 0, 0]] + [c["rgba"] for c in legend["classes"]]
    return np.array(rows, dtype=np.uint8)


def _hex6(rgba) -> str:
    return to_hex((*rgba[:3], 255))


def qml(legend: dict) -> str:
    """A QGIS style (QML) with a paletted renderer: one ``paletteEntry`` per class id."""
    root = ET.Element("qgis", {"version": "3.28.0", "styleCategories": "AllStyleCategories",
                               "hasScaleBasedVisibilityFlag": "0", "minScale": "1e+08", "maxScale": "0"})
    pipe = ET.SubElement(root, "pipe")
    provider = ET.SubElement(pipe, "provider")
    ET.SubElement(provider, "resampling", {
        "enabled": "false", "maxOversampling": "2",
        "zoomedInResamplingMethod": "nearestNeighbour", "zoomedOutResamplingMethod": "nearestNeighbour",
    })
    renderer = ET.SubElement(pipe, "rasterrenderer", {
        "type": "paletted", "band": "1", "opacity": "1", "alphaBand": "-1", "nodataColor": "",
    })
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for c in legend["classes"]:
        ET.SubElement(palette, "paletteEntry", {
            "value": str(c["id"]), "color": _hex6(c["rgba"]), "alpha": str(c["rgba"][3]), "label": c["label"],
        })
    ET.SubElement(pipe, "brightnesscontrast", {"brightness": "0", "contrast": "0", "gamma": "1"})
    ET.SubElement(pipe, "huesaturation", {
        "saturation": "0", "grayscaleMode": "0", "colorizeOn": "0", "colorizeRed": "255",
        "colorizeGreen": "128", "colorizeBlue": "128", "colorizeStrength": "100",
    })
    ET.SubElement(pipe, "rasterresampler", {"maxOversampling": "2"})
    ET.SubElement(pipe, "resamplingStage").text = "resamplingFilter"
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    return QGIS_DOCTYPE + "\n" + ET.tostring(root, encoding="unicode") + "\n"


def sld(legend: dict, name: str) -> str:
    """An SLD 1.0 style: ``ColorMap type="intervals"`` over the class ids."""
    q = lambda tag: f"{{{SLD_NS}}}{tag}"  # noqa: E731
    root = ET.Element(q("StyledLayerDescriptor"), {
        "version": "1.0.0",
        "{http://www.w3.org/2001/XMLSchema-instance}schemaLocation":
            "http://www.opengis.net/sld http://schemas.opengis.net/sld/1.0.0/StyledLayerDescriptor.xsd",
    })
    layer = ET.SubElement(root, q("NamedLayer"))
    ET.SubElement(layer, q("Name")).text = name
    style = ET.SubElement(layer, q("UserStyle"))
    ET.SubElement(style, q("Name")).text = name
    ET.SubElement(style, q("Title")).text = (
        f"sceneclass {legend['scheme']}: {len(legend['classes'])} classes of {redact(legend['input'])}")
    rule = ET.SubElement(ET.SubElement(style, q("FeatureTypeStyle")), q("Rule"))
    sym = ET.SubElement(rule, q("RasterSymbolizer"))
    ET.SubElement(sym, q("Opacity")).text = "1.0"
    gray = ET.SubElement(ET.SubElement(sym, q("ChannelSelection")), q("GrayChannel"))
    ET.SubElement(gray, q("SourceChannelName")).text = "1"
    cmap = ET.SubElement(sym, q("ColorMap"), {"type": "intervals"})
    ET.SubElement(cmap, q("ColorMapEntry"), {"color": "#000000", "quantity": "1", "opacity": "0", "label": "nodata"})
    for c in legend["classes"]:
        attrs = {"color": _hex6(c["rgba"]), "quantity": str(c["id"] + 1), "label": c["label"]}
        if c["rgba"][3] != 255:
            attrs["opacity"] = f"{c['rgba'][3] / 255:.6g}"
        ET.SubElement(cmap, q("ColorMapEntry"), attrs)
    ET.indent(root)
    ET.register_namespace("", SLD_NS)  # serialise SLD elements unprefixed
    text = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n"


def gdal_color_file(legend: dict) -> str:
    """``gdaldem color-relief`` colour file: ``id r g b a`` per class, ``nv 0 0 0 0`` for nodata."""
    lines = ["nv 0 0 0 0"]
    lines += [f"{c['id']} {' '.join(str(int(v)) for v in c['rgba'])}" for c in legend["classes"]]
    return "\n".join(lines) + "\n"
