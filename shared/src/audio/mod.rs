//! Audio decoding (symphonia) and acoustic features, shared by download (probe) and analyze.
