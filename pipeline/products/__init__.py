"""Products made from a finished run: quicklook and plots, style files, the HTML report."""
