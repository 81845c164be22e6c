"""The saved model: the network, its folder, the mood tagger, and what serving derives from them.

This layer sits below mining, training, evaluation, retrieval and serving, which all
load it; it imports none of them.
"""
