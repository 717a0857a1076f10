"""Using a trained model on new images: whole / tiled / resized prediction, streaming of fields beyond
memory, PNG rows, cell counting, uncertainty ranking, the predict run and model export.

May import: everything above it (errors ... training); never html_report.
"""
