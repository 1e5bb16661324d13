"""The data checks: per-image summaries and their GX checks, the content checks against the
reference (drift, label quality, near-duplicates), the bounds they apply, and prepare's gate."""
