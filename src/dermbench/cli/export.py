"""``dermbench export-hdf5 DATASET --out file.h5`` and ``dermbench import-hdf5 FILE --out DIR``:
move between the contract folder and the one-file HDF5 layout the study's embedding pipeline read.
"""

from __future__ import annotations

import argparse

HELP_EXPORT = "write a dataset folder to one HDF5 file (img_id, benign_malignant, image bytes per partition)"
HELP_IMPORT = "turn an HDF5 file of that layout (or the study's) back into a dataset folder"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("export-hdf5", help=HELP_EXPORT, description=HELP_EXPORT + ".")
    parser.add_argument("dataset", help="dataset folder")
    parser.add_argument("--out", required=True, help="HDF5 file to write")
    parser.add_argument("--no-images", action="store_true", help="metadata only (no image bytes)")
    parser.add_argument("--group-names", default="train,validation,test",
                        help="partition group names, comma separated (e.g. train,val,test)")
    parser.set_defaults(func=run_export)

    imp = subparsers.add_parser("import-hdf5", help=HELP_IMPORT, description=HELP_IMPORT + ".")
    imp.add_argument("file", help="HDF5 file")
    imp.add_argument("--out", required=True, help="dataset folder to create")
    imp.add_argument("--images", help="image folder, when the file holds no image bytes")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    imp.set_defaults(func=run_import)
    return parser


def run_export(args: argparse.Namespace) -> int:
    from ..data.hdf5_io import export_hdf5
    from ..errors import DermbenchError, UsageError

    try:
        out = export_hdf5(args.dataset, args.out, include_images=not args.no_images,
                          group_names=[g.strip() for g in args.group_names.split(",")])
    except DermbenchError:
        raise
    except (ValueError, OSError) as exc:  # bad --group-names, an unwritable --out
        raise UsageError(str(exc)) from exc
    print(f"wrote {out}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ..data.hdf5_io import import_hdf5
    from ..errors import DermbenchError, UsageError

    try:
        import_hdf5(args.file, args.out, images=args.images, overwrite=args.overwrite)
    except DermbenchError:
        raise
    except (ValueError, OSError) as exc:  # not an HDF5 file, an existing --out, unreadable images
        raise UsageError(str(exc)) from exc
    return 0


run = run_export
