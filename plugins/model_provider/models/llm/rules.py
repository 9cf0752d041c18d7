"""Parameter rules that depend on the model's chat template, declared only where it takes them."""

from __future__ import annotations

from dify_plugin.entities import I18nObject
from dify_plugin.entities.model import ParameterRule, ParameterType

from tritonmm.contract import PARAM_ENABLE_THINKING

# For templates that reference enable_thinking (tmm.thinking_switch): Qwen3 and its kin.
# No default: left unset, the template decides (Qwen3 thinks).
THINKING_RULE = ParameterRule(
    name=PARAM_ENABLE_THINKING,
    label=I18nObject(en_US="Thinking", zh_Hans="深度思考", ja_JP="思考モード", pt_BR="Raciocínio"),
    type=ParameterType.BOOLEAN,
    required=False,
    help=I18nObject(
        en_US="Let the model think before it answers (its reasoning is shown as a thinking block). "
        "Off: it answers at once, through its chat template's own switch.",
        zh_Hans="让模型先思考再回答（推理过程显示为思考块）。关闭后，模型通过其对话模板自带的开关直接回答。",
        ja_JP="回答の前にモデルに考えさせます（推論は思考ブロックとして表示されます）。"
        "オフにすると、チャットテンプレート自体の切り替えにより、すぐに回答します。",
        pt_BR="Deixa o modelo pensar antes de responder (o raciocínio aparece como um bloco de pensamento). "
        "Desligado: ele responde direto, pela chave do próprio template de chat.",
    ),
)
