"""``pixdiff convert-inception``: check the FID Inception-v3 weights, write them as safetensors."""

from __future__ import annotations

from pixdiff.eval.inception import WEIGHTS_SHA256, WEIGHTS_URLS, convert_inception_weights


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert-inception",
        help="check the FID Inception-v3 weights file and write it as safetensors",
        description="Read the Inception-v3 FID weights (a PyTorch state dict, loaded with "
        "weights_only=True so no code runs), check every tensor's name and shape, and write "
        "them to a safetensors file for `pixdiff eval --extractor inception --weights FILE`. "
        f"Nothing is downloaded: fetch the file on a machine with internet from {WEIGHTS_URLS[0]} "
        f"(or pytorch-fid's copy, {WEIGHTS_URLS[1]}); its SHA-256 is {WEIGHTS_SHA256}. "
        "The .pth file also works directly; the conversion makes a file that can never hold code.",
    )
    p.add_argument("weights", metavar="WEIGHTS", help="the released .pth file")
    p.add_argument("--out", required=True, help="the safetensors file to write")
    p.set_defaults(func=run)


def run(args) -> int:
    digest = convert_inception_weights(args.weights, args.out)
    if digest == WEIGHTS_SHA256:
        note = "the released file: its FIDs compare with published ones"
    else:
        note = (
            f"not the released file ({WEIGHTS_SHA256[:16]}...): FIDs made with these weights "
            "compare only with each other"
        )
    print(f"wrote {args.out} (SHA-256 of {args.weights}: {digest}, {note})")
    return 0
