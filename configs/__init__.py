"""Shared config pieces, installed as ``detrex_ext.config.configs`` (see setup.py).

Load them with ``detrex_ext.config.get_config("common/train.py")``; they are config files, not
modules to import.
"""
