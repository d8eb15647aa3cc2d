"""Writes an avatar's model_card.md from its train_report.json and eval.json (and the pipeline's
timings, when scripts/train_default_avatar.sh measured them).

    python -m pipeline.evaluate.model_card AVATAR_DIR [--timings timings.json] [--commands cmds.txt]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def card(avatar_dir: Path, timings: dict | None = None, commands: list[str] | None = None) -> str:
    config = json.loads((avatar_dir / "config.json").read_text())
    train = json.loads((avatar_dir / "train_report.json").read_text())
    result = json.loads((avatar_dir / "eval.json").read_text())
    report, tconfig = train["report"], train["config"]
    notes, spec = config["notes"], config["spec"]
    data, losses = report["data"], report["losses"]
    default = result["lambda_video_default"]
    lat = result.get("latency_ms") or {}
    lines = [
        f"# Avatar `{config['name']}`",
        "",
        "The reactive host avatar of the synthetic talk show: motion generator (audio path + reactive video branch),",
        "guest encoder and renderer, trained from scratch by `f2f train` on curated clips of synthetic episodes",
        "(`f2f synth` -> `f2f curate`) and evaluated by `f2f evaluate` on the curated test split.",
        "",
        "## How it was made",
        "",
        "```",
        *(commands or ["scripts/train_default_avatar.sh"]),
        "```",
        "",
        f"- Data: {data['clips']} curated train clips, {data['minutes']} min ({data['frames']} frames) from episodes "
        f"{', '.join(data['episodes'])}; host motion targets on {data['host_valid_frames']} frames, renderer frames "
        f"{data['host_render_frames']}, host speaking {data['host_speaking_frames']} frames, guest visible "
        f"{data['guest_visible_frames']} frames; {report['windows']} training windows.",
        f"- Host framing (the curated crops' median): eyes at ({notes['framing']['eye_x']}, {notes['framing']['eye_y']}), "
        f"face height {notes['framing']['face_fraction']} of the frame.",
        "- Host audio: the clip's studio mix gated by the diarized host-speech intervals (the guest's voice removed: the",
        "  gateway receives the host's voice only); gain, noise-floor and voice-warp augmentation.",
        f"- Guest encoder CNN: {losses['guest'].get('steps')} steps regressing the partner's face geometry from its crop, "
        "then frozen (the paper's frozen I3D).",
        f"- Stage 1 (audio path, guest branch off): {losses['stage1'].get('steps')} steps of batch "
        f"{tconfig['stage1']['loop']['batch_size']}, loss {losses['stage1'].get('first_mean')} -> "
        f"{losses['stage1'].get('last_mean')}.",
        f"- Stage 2 (video branch on the frozen audio path, guest-context dropout {tconfig['stage2']['guest_dropout']}): "
        f"{losses['stage2'].get('steps')} steps of batch {tconfig['stage2']['loop']['batch_size']}, loss "
        f"{losses['stage2'].get('first_mean')} -> {losses['stage2'].get('last_mean')}.",
        *_selection_lines(report.get("stage2_selection")),
        f"- Sampling: {config['motion_generator'].get('sampling_steps')} Euler steps of the flow from temperature "
        f"{config['motion_generator'].get('temperature', 1.0)} x the noise; default lambda_video {default}.",
        f"- Renderer: {losses['renderer'].get('steps')} steps of batch {tconfig['renderer']['loop']['batch_size']} on "
        f"canonical host frames, loss {losses['renderer'].get('first_mean')} -> {losses['renderer'].get('last_mean')}.",
        f"- Networks: guest encoder {report['parameters']['guest_encoder']:,}, motion generator "
        f"{report['parameters']['motion_generator']:,}, renderer {report['parameters']['renderer']:,} parameters "
        f"(total {report['parameters']['total']:,}); checkpoint {report.get('checkpoint_bytes', 0) / 2**20:.2f} MiB.",
        f"- Spec: {spec['frame_size']}x{spec['frame_size']} frames, K = {spec['frames_per_step']} frame per step, "
        f"look-ahead {spec['lookahead_frames']} frames, guest context {spec['guest_context_frames']} frames, "
        f"{config['motion_generator']['sampling_steps']} flow steps; default lambda_video {default}.",
        "- Training steps' time (summed over resumed runs): " + ", ".join(
            f"{name} {losses[name].get('seconds', 0):.0f} s" for name in ("guest", "stage1", "stage2", "renderer")) + ".",
    ]
    if timings:
        lines.append("- Pipeline wall time: " + ", ".join(f"{k} {v} s" for k, v in timings.items()) + ".")
    lines += [
        "",
        f"## Evaluation (`eval.json`, test split: {result['clips']} clips, {result['frames']} frames, episodes "
        f"{', '.join(result['episodes'])}; {result['seeds']} noise seeds)",
        "",
        "| figure | value |",
        "|---|---|",
        f"| lip-sync: jawOpen (face mesh on rendered frames) vs ground truth, `lipsync_corr` | {_fmt(result['lipsync_corr'])} |",
        f"| offset of the best correlation, `lipsync_offset_frames` | {result['lipsync_offset_frames']} |",
        f"| the same at offset 0 | {_fmt(result['lipsync_corr_at_zero_offset'])} |",
        f"| generated jawOpen (motion) vs ground truth | {_fmt(result['jaw_corr_motion'])} |",
        f"| mouth landmark distance (eye spans), generated / renderer on real motion | "
        f"{_fmt(result['mouth_landmark_distance'], 4)} / {_fmt(result['mouth_landmark_distance_reconstruction'], 4)} |",
        f"| reaction F1 at lambda {default}, `reaction_f1` (precision / recall) | {_fmt(result['reaction_f1'])} "
        f"({_fmt(result['reaction_precision'])} / {_fmt(result['reaction_recall'])}) |",
        f"| reaction F1 at lambda 0, `reaction_f1_audio_only` (precision / recall) | "
        f"{_fmt(result['reaction_f1_audio_only'])} ({_fmt(result['reaction_precision_audio_only'])} / "
        f"{_fmt(result['reaction_recall_audio_only'])}) |",
        f"| reaction F1 of the curated (measured) host motion itself | {_fmt(result['reaction_f1_measured_host_motion'])} |",
        f"| identity distance to the host (dlib), `identity_distance` (real frames' own spread) | "
        f"{_fmt(result['identity_distance'])} ({_fmt(result['identity_distance_reference_spread'])}) |",
        f"| face found in rendered frames, `face_detect_rate` | {_fmt(result['face_detect_rate'], 4)} |",
        f"| PSNR / SSIM vs real frames, `psnr` / `ssim` | {_fmt(result['psnr'], 2)} dB / {_fmt(result['ssim'])} |",
        f"| PSNR / SSIM, renderer on the real motion | {_fmt(result['psnr_reconstruction'], 2)} dB / "
        f"{_fmt(result['ssim_reconstruction'])} |",
        *_long_session_rows(result.get("long_session")),
        "",
        "Reactions per rule (scored cues: the clip's guest, visible, and a ground-truth reaction the detector sees):",
        "",
        "| rule | cues | F1 at lambda default (P / R) | F1 at lambda 0 (P / R) |",
        "|---|---|---|---|",
    ]
    for rule, row in result["reaction_per_rule"].items():
        zero = result["reaction_per_rule_audio_only"][rule]
        lines.append(f"| {rule} | {row['cues']} | {_fmt(row['f1'])} ({_fmt(row['precision'])} / {_fmt(row['recall'])}) "
                     f"| {_fmt(zero['f1'])} ({_fmt(zero['precision'])} / {_fmt(zero['recall'])}) |")
    lines += ["", "Time-lagged cross-correlation of cues and responses (peak, at lag):", "",
              "| rule | lambda default | lambda 0 | ground truth |", "|---|---|---|---|"]
    for rule in result["tlcc"]["default"]:
        cells = [f"{_fmt(result['tlcc'][k][rule]['peak_corr'])} at {result['tlcc'][k][rule]['peak_lag_s']} s"
                 for k in ("default", "audio_only", "ground_truth")]
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    lines += ["", "Guidance sweep (the paper's Table 2; figure `eval/cfg_sweep.png`):", "",
              "| lambda_video | reaction F1 | precision | recall | lip-sync corr (offset) | jawOpen corr (motion) "
              "| head rotation deg/frame |", "|---|---|---|---|---|---|---|"]
    for row in result["cfg_sweep"]:
        lines.append(f"| {row['lambda_video']:g} | {_fmt(row['reaction_f1'])} | {_fmt(row['reaction_precision'])} | "
                     f"{_fmt(row['reaction_recall'])} | {_fmt(row['lipsync_corr'])} ({row['lipsync_offset_frames']}) | "
                     f"{_fmt(row['jaw_corr_motion'])} | {_fmt(row['head_rotation_deg_per_frame'])} |")
    if lat:
        med = lat["median_ms"]
        lines += ["", f"Per-frame compute, onnxruntime {lat['onnxruntime']} CPU, batch 1, {lat['intra_op_threads']} "
                      f"intra-op thread(s), median of {lat['calls']} calls ({lat['cores']} cores, shared machine): "
                      f"guest encoder {med['guest_encoder']} ms, motion generator {med['motion_generator']} ms, renderer "
                      f"{med['renderer']} ms; sum {med['sum']} ms (budget 25 ms)."]
    per_rule = result["reaction_per_rule"]
    scored = sum(row["cues"] for row in per_rule.values()) // max(result["seeds"], 1)
    answered = ", ".join(f"{rule} {row['true_positives']} of {row['cues']}" for rule, row in per_rule.items())
    lines += ["", "## Known limits", "",
              f"- The curated data is small: {data['minutes']} min of train clips, about "
              f"{data['host_speaking_frames'] / 25 / 60:.1f} min of host speech.",
              f"- The test split holds {scored} scored guest cue(s) per noise seed. Cues answered at the default "
              f"lambda (all seeds): {answered}.",
              "- The reactive branch's training varies widely from run to run (same data, same configuration): "
              "compare avatars over several runs (docs/model.md).",
              "", "Plots: `eval/` (cfg_sweep, lipsync_offsets, tlcc, timeline, frames). Everything: `eval.json`, "
                  "`train_report.json`.", ""]
    return "\n".join(lines)


def _selection_lines(selection: dict | None) -> list[str]:
    """Stage 2's candidates (one per loop seed) and the one kept, as `f2f train` scored them."""
    if not selection:
        return []
    scores = "; ".join(f"seed {c['seed']}: F1 {_fmt(c['reaction_f1'])} (P {_fmt(c['reaction_precision'], 2)} / "
                       f"R {_fmt(c['reaction_recall'], 2)})" for c in selection["candidates"])
    return [f"- Stage 2 trained {len(selection['candidates'])} times (loop seeds); kept seed "
            f"{selection['chosen_seed']}, the highest reaction F1 on the {selection['split']} split "
            f"({selection['clips']} clips, not trained on; lambda_video {selection['lambda_video']}, "
            f"{selection['noise_seeds']} noise seeds): {scores}. The loss above is the kept run's."]


def _long_session_rows(figures: dict | None) -> list[str]:
    """The long-session row (eval.json of older avatars has none)."""
    if not figures:
        return []
    ranges = ", ".join(f"{name} {f['generated_min']:g}..{f['generated_max']:g} (data {f['data_p1']:g}..{f['data_p99']:g})"
                       for name, f in figures["fields"].items())
    return [f"| head pose over the test clips back to back ({figures['seconds']:g} s, {figures['seeds']} seeds): frames "
            f"more than {figures['margin_deg']:g} deg outside the data's p1-p99, `long_session.frames_outside` "
            f"| {_fmt(figures['frames_outside'], 4)} ({ranges}) |"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate.model_card")
    parser.add_argument("avatar", type=Path)
    parser.add_argument("--timings", type=Path, default=None, help="JSON of pipeline step -> seconds")
    parser.add_argument("--commands", type=Path, default=None, help="text file: the commands that made it")
    args = parser.parse_args(argv)
    timings = json.loads(args.timings.read_text()) if args.timings and args.timings.is_file() else None
    commands = args.commands.read_text().strip().splitlines() if args.commands and args.commands.is_file() else None
    (args.avatar / "model_card.md").write_text(card(args.avatar, timings, commands))
    print(args.avatar / "model_card.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
