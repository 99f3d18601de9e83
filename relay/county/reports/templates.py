"""Report templates in Chinese, per modality and region: the text a reader starts from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Template:
    key: str
    name: str
    modalities: tuple[str, ...]
    findings: str
    impression: str


TEMPLATES: tuple[Template, ...] = (
    Template("chest-pa", "胸部正位片", ("CR", "DX"),
             "胸廓对称，气管居中。双肺纹理清晰，走行自然，未见明确实质性病变。双肺门不大。"
             "心影大小、形态未见异常。双侧膈面光整，肋膈角锐利。",
             "胸部正位片未见明显异常。"),
    Template("head-ct-plain", "头颅CT平扫", ("CT",),
             "脑实质内未见明确异常密度影，灰白质分界清楚。脑室系统大小、形态未见异常，"
             "脑沟、脑裂未见增宽，中线结构居中。颅骨未见明确骨折。",
             "头颅CT平扫未见明显异常。"),
    Template("ecg-12-lead", "常规十二导联心电图", ("ECG",),
             "窦性心律，心率 __ 次/分。P波形态正常，PR间期 __ ms，QRS时限 __ ms，"
             "QT/QTc __/__ ms。ST段未见明显偏移，T波未见异常。",
             "窦性心律，正常心电图。"),
    Template("abdomen-us", "腹部超声", ("US",),
             "肝脏大小形态正常，包膜光滑，实质回声均匀。胆囊大小正常，壁光滑，腔内未见异常回声。"
             "胰腺、脾脏、双肾未见明显异常。",
             "腹部超声未见明显异常。"),
)


def for_modality(modalities: str) -> list[Template]:
    """Templates that fit a study's modalities (backslash-separated), others after them."""
    present = set(modalities.split("\\"))
    return sorted(TEMPLATES, key=lambda t: not present.intersection(t.modalities))


def get(key: str) -> Template | None:
    return next((t for t in TEMPLATES if t.key == key), None)
