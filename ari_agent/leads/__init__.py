"""Leads: typed fields a profile collects from a caller, the dialog that completes them, and their hand-off.

``fields`` parses and validates answers, ``dialog`` drives the questions (both pure).
"""
