"""models, inspect, predict: the zoo's commands."""

from __future__ import annotations

import argparse

from ._common import print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registry's backbones")
    p.add_argument("pattern", nargs="?", help="shell-style pattern, e.g. 'resnet*'")
    p.add_argument("--available", action="store_true", help="only models whose weights are on this machine")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("inspect", help="layer table: K, F, S, P, output volume and parameters per layer")
    p.add_argument("model")
    p.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("predict", help="classify images with a zoo model (ImageNet labels) or an exported .onnx file")
    p.add_argument("model", help="zoo model name or MODEL.onnx")
    p.add_argument("images", nargs="+")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--weights", help="explicit weight file (zoo models)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)


def cmd_models(args) -> int:
    from transferzoo import zoo

    rows = []
    for name in zoo.list_models(args.pattern, available_only=args.available):
        i = zoo.info(name)
        srcs = zoo.available_sources(i.entry)
        rows.append(
            {
                "name": name,
                "timm": i.entry.timm_name,
                "params_m": round(i.num_params / 1e6, 2),
                "input_size": "x".join(str(s) for s in i.preprocessing.input_size[1:]),
                "weights": ", ".join(srcs) if srcs else "-",
                "license": i.entry.license,
                "stages": [s.num_chs for s in i.stages],
            }
        )
    if args.json:
        print_json(rows)
    elif not rows:
        print("no models match" + (" with weights on this machine" if args.available else ""))
    else:
        print_table(rows, ["name", "params_m", "input_size", "weights", "license"])
    return 0


def cmd_inspect(args) -> int:
    from transferzoo import zoo
    from transferzoo.zoo.layers import layer_table

    size = tuple(args.input_size) if args.input_size else zoo.preprocessing(args.model).input_size[1:]
    if min(size) < 8 or max(size) > 4096:
        raise ValueError(f"--input-size {size[0]} {size[1]}: each side must be in 8..4096")
    model = zoo.create(args.model, pretrained=False)
    rows, totals = layer_table(model, size)
    if args.json:
        print_json(
            {
                "model": zoo.get(args.model).name,
                "input_size": list(size),
                "layers": [r.to_dict() for r in rows],
                "totals": totals,
            }
        )
    else:
        table = [dict(r.to_dict(), check="ok" if r.ok else "MISMATCH") for r in rows]
        print_table(table, ["name", "kind", "K", "F", "S", "P", "out", "params", "check"])
        print(f"\n{totals['layers']} layers ({totals['conv_layers']} conv), input {size[1]} x {size[0]} x 3")
        print(
            f"parameters: {totals['params_formula']:,} by formula, {totals['params_real']:,} in the model -> "
            f"{'match' if totals['params_match'] else 'MISMATCH'}; output volumes vs forward pass: "
            f"{'all match' if totals['shapes_match'] else 'MISMATCH'}"
        )
    return 0 if totals["params_match"] and totals["shapes_match"] else 1


def cmd_predict(args) -> int:
    if args.model.endswith(".onnx"):
        from transferzoo.serve.predict import predict_onnx

        results = predict_onnx(args.model, args.images, top_k=args.top_k)
    else:
        from transferzoo.zoo.predict import predict_images

        results = predict_images(args.model, args.images, top_k=args.top_k, weights=args.weights)
    results = [r.to_dict() if hasattr(r, "to_dict") else r for r in results]
    if args.json:
        print_json(results)
    else:
        for r in results:
            if r.get("error"):
                print(f"{r['path']}: error: {r['error']}")
                continue
            print(r["path"])
            for t in r["top"]:
                print(f"  {t['probability']:7.2%}  {t['label']}  ({t['index']})")
    return 1 if any(r.get("error") for r in results) else 0
