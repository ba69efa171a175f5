"""The readable form of a plan (the table ``python -m torch_tpu.plan`` prints without ``--json``)."""

from .._C.hbm import format_bytes
from ..report import format_time
from . import models
from .training import format_mesh

CONSUMERS = {"params": "parameters", "grads": "gradients", "optimizer": "optimizer state",
             "activations": "activations"}


def table(result):
    if isinstance(result, list):
        return sweep_table(result)
    return serving_table(result) if result["mode"] == "serving" else training_table(result)


def _title(result):
    config = models.CONFIGS.get(result["model"])
    about = f" ({models.describe(config)})" if config else ""
    return f"{result['model']}{about}\non {result['chips']} x {result['chip']}, mesh {format_mesh(result['mesh'])}"


def _fit_line(memory):
    share = memory["peak"] / memory["capacity"] if memory["capacity"] else float("inf")
    line = f"  {'peak':<22}{format_bytes(memory['peak']):>12}  of {format_bytes(memory['capacity'])} ({share:.0%})"
    if memory["fits"]:
        return line + "  fits"
    over = format_bytes(memory["peak"] - memory["capacity"])
    largest = memory.get("largest_consumer")
    culprit = f"; largest consumer: {CONSUMERS.get(largest, largest)} ({format_bytes(memory[largest])})" if largest else ""
    return line + f"\n  OUT OF MEMORY: the peak exceeds HBM by {over}{culprit}"


def _batch(result):
    return f"{result['batch']} x {result['seq']} tokens" if result["seq"] else f"{result['batch']} samples"


def _throughput_label(result):
    """Tokens for a model of sequences, samples for one whose function takes no ``seq`` (a ViT)."""
    return "tokens/s" if result["seq"] else "samples/s"


def _throughput(result):
    return result["tokens_per_s_per_chip"] if result["seq"] else result["samples_per_s_per_chip"]


def training_table(result):
    memory, step = result["hbm_per_chip"], result["step"]
    precision = result["precision"]
    lines = [
        _title(result) + f" (torus {result['topology']})",
        f"batch {_batch(result)}, {result['dtype']} matmuls, activation checkpointing "
        f"{'on' if result['checkpoint'] else 'off'}, {result['optimizer']} ({precision['master']} master, "
        f"{precision['compute']} compute, {precision['reduce']} gradient reduction)",
        "",
        "HBM per chip",
        *(f"  {label:<22}{format_bytes(memory[key]):>12}" for key, label in CONSUMERS.items()),
        _fit_line(memory),
        "",
        "Step",
        f"  {'predicted':<22}{format_time(step['time_s']):>12}  (roofline {format_time(step['roofline_s'])}"
        f" / efficiency {step['efficiency']:.2f})",
        f"  {'MXU compute':<22}{format_time(step['compute_s']):>12}",
        f"  {'HBM':<22}{format_time(step['hbm_s']):>12}",
        f"  {'exposed ICI':<22}{format_time(step['ici_exposed_s']):>12}  (ICI busy {format_time(step['ici_s'])})",
        f"  {'MFU':<22}{result['mfu']:>12.1%}  (roofline {result['roofline_mfu']:.1%})",
        f"  {_throughput_label(result) + ' per chip':<22}{_throughput(result):>12,.0f}",
    ]
    return "\n".join(lines)


def serving_table(result):
    memory = result["hbm_per_chip"]
    lines = [
        _title(result),
        f"batch {result['batch']}, prompt {result['prompt']} tokens, {result['generate']} generated, "
        f"{result['weight_dtype']} weights, {result['kv_dtype']} KV cache",
        "",
        "HBM per chip",
        f"  {'weights':<22}{format_bytes(memory['weights']):>12}",
        f"  {'KV cache':<22}{format_bytes(memory['kv_cache']):>12}",
        _fit_line(memory),
        "",
        f"  {'prefill':<22}{format_time(result['prefill_s']):>12}  {result['prefill_bound']}-bound "
        f"(roofline {format_time(result['prefill_roofline_s'])})",
        f"  {'decode step':<22}{format_time(result['decode_step_s']):>12}  {result['decode_bound']}-bound "
        f"(roofline {format_time(result['decode_step_roofline_s'])})",
        f"  {'tokens/s':<22}{result['tokens_per_s']:>12,.0f}  (end to end; decode alone "
        f"{result['decode_tokens_per_s']:,.0f})",
    ]
    return "\n".join(lines)


def sweep_table(results):
    header = f"{'mesh':<22}{'fits':>6}{'peak HBM':>14}{'step':>12}{'MFU':>8}{_throughput_label(results[0]) + '/chip':>15}"
    rows = [header, "-" * len(header)]
    for result in results:
        memory = result["hbm_per_chip"]
        rows.append(f"{format_mesh(result['mesh']):<22}{'yes' if memory['fits'] else 'NO':>6}"
                    f"{format_bytes(memory['peak']):>14}{format_time(result['step']['time_s']):>12}"
                    f"{result['mfu']:>8.1%}{_throughput(result):>15,.0f}")
    first = results[0]
    title = (f"{first['model']} on {first['chips']} x {first['chip']}: batch {_batch(first)}, "
             f"{first['dtype']}, checkpointing {'on' if first['checkpoint'] else 'off'}; fastest first")
    return "\n".join([title, "", *rows])
