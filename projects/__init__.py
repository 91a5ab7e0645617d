"""Model projects built on detrex_ext."""
