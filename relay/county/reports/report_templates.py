"""Report templates in Chinese, per modality and body region: the text a reader starts from.

Each template is a normal report (检查所见, 诊断意见, 建议) that the reader edits. A study
is offered the templates of its modality and body region first (BodyPartExamined of its
series, normalised as in :mod:`relay.dicom.body_parts`), so a chest CT starts from
胸部CT平扫, not 头颅CT平扫. An ECG names no region: its modality decides.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Template:
    key: str
    name: str
    modalities: tuple[str, ...]
    regions: tuple[str, ...]
    """Normalised body regions the template is written for; empty: any (an ECG)."""
    findings: str
    impression: str
    advice: str = ""


_CLINIC = "请结合临床。"

TEMPLATES: tuple[Template, ...] = (
    Template("chest-pa", "胸部正位片", ("CR", "DX"), ("CHEST",),
             "胸廓对称，气管居中。双肺纹理清晰，走行自然，未见明确实质性病变。双肺门不大。"
             "心影大小、形态未见异常。双侧膈面光整，肋膈角锐利。",
             "胸部正位片未见明显异常。", _CLINIC),
    Template("chest-ct-plain", "胸部CT平扫", ("CT",), ("CHEST",),
             "胸廓对称，气管及主支气管通畅。双肺纹理清晰，双肺野内未见明确实质性病变及结节影。"
             "纵隔居中，纵隔内未见明显肿大淋巴结。心脏及大血管形态、密度未见异常。"
             "双侧胸腔未见积液，胸膜未见增厚。所见骨质未见明确异常。",
             "胸部CT平扫未见明显异常。", _CLINIC),
    Template("head-ct-plain", "头颅CT平扫", ("CT",), ("HEAD",),
             "脑实质内未见明确异常密度影，灰白质分界清楚。脑室系统大小、形态未见异常，"
             "脑沟、脑裂未见增宽，中线结构居中。颅骨未见明确骨折。",
             "头颅CT平扫未见明显异常。", _CLINIC),
    Template("abdomen-ct-plain", "上腹部CT平扫", ("CT",), ("ABDOMEN",),
             "肝脏大小、形态正常，各叶比例协调，肝实质密度均匀，未见明确异常密度影；肝内外胆管未见扩张。"
             "胆囊不大，壁不厚，腔内未见异常密度影。胰腺、脾脏大小、形态及密度未见异常。"
             "双肾形态、大小正常，未见明确异常密度影，肾盂、肾盏未见扩张。"
             "腹膜后未见明显肿大淋巴结，腹腔内未见积液。",
             "上腹部CT平扫未见明显异常。", _CLINIC),
    Template("lspine-ct-plain", "腰椎CT平扫", ("CT",), ("LSPINE",),
             "腰椎生理曲度存在，椎体序列整齐，各椎体骨质未见明确破坏及骨折。"
             "L3/4、L4/5、L5/S1椎间盘未见明显膨出或突出，硬膜囊未见受压，双侧侧隐窝及椎间孔未见狭窄。"
             "椎旁软组织未见异常。",
             "腰椎CT平扫未见明显异常。", _CLINIC),
    Template("cspine-dx", "颈椎正侧位片", ("CR", "DX"), ("CSPINE",),
             "颈椎生理曲度存在，椎体序列整齐，各椎体形态及骨质密度未见明显异常。"
             "椎间隙未见明显狭窄，钩椎关节未见明显增生，项韧带未见钙化，椎前软组织未见增厚。",
             "颈椎正侧位片未见明显异常。", _CLINIC),
    Template("lspine-dx", "腰椎正侧位片", ("CR", "DX"), ("LSPINE",),
             "腰椎生理曲度存在，椎体序列整齐，各椎体形态及骨质密度未见明显异常。"
             "椎间隙未见明显狭窄，附件结构未见异常，椎旁软组织未见异常。",
             "腰椎正侧位片未见明显异常。", _CLINIC),
    Template("knee-dx", "膝关节正侧位片", ("CR", "DX"), ("KNEE",),
             "（左/右）膝关节骨质结构完整，未见明确骨折及骨质破坏。关节面光整，关节间隙未见明显狭窄，"
             "髌骨位置正常，周围软组织未见明显肿胀。",
             "（左/右）膝关节正侧位片未见明显异常。", _CLINIC),
    Template("ecg-12-lead", "常规十二导联心电图", ("ECG",), (),
             "窦性心律，心率 __ 次/分。P波形态正常，PR间期 __ ms，QRS时限 __ ms，"
             "QT/QTc __/__ ms。ST段未见明显偏移，T波未见异常。",
             "窦性心律，正常心电图。"),
    Template("abdomen-us", "腹部超声", ("US",), ("ABDOMEN",),
             "肝脏大小形态正常，包膜光滑，实质回声均匀。胆囊大小正常，壁光滑，腔内未见异常回声。"
             "胰腺、脾脏、双肾未见明显异常。",
             "腹部超声未见明显异常。", _CLINIC),
)


def ranked(*, modalities: str, regions: Collection[str] = ()) -> list[Template]:
    """Every template, best fit first: the study's modality (backslash-separated) and body
    region, then its modality with no region to match, then its modality for another
    region, then the other modalities."""
    present = set(modalities.split("\\")) - {""}
    wanted = set(regions)

    def key(t: Template) -> tuple[bool, int]:
        if not wanted or not t.regions:
            region = 1
        else:
            region = 0 if wanted.intersection(t.regions) else 2
        return not present.intersection(t.modalities), region

    return sorted(TEMPLATES, key=key)  # stable: ties keep the order above


def get(key: str) -> Template | None:
    return next((t for t in TEMPLATES if t.key == key), None)
