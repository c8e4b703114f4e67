"""Why a network decides: attributions (Grad-CAM, saliency, integrated gradients, occlusion; computed with
Captum), receptive fields measured (theoretical and effective) and embeddings for TensorBoard's projector."""
